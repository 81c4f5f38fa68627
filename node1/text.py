"""Input preprocessing and output text: the chat template, token ids, streaming detokenization, stop strings."""
from pathlib import Path

from transformers import AutoTokenizer


class PromptTooLong(ValueError):
    """The templated prompt exceeds the configured maximum input length."""


class TextCodec:
    def __init__(self, tokenizer_dir: Path, config: dict):
        self.tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        eos = config.get("eos_token_id", self.tok.eos_token_id)
        self.eos_ids = frozenset(eos if isinstance(eos, list) else [eos]) - {None}
        if self.tok.eos_token_id is not None:
            self.eos_ids |= {self.tok.eos_token_id}

    def encode_chat(self, messages, max_input_tokens: int) -> list[int]:
        ids = self.tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, return_dict=True)
        ids = list(ids["input_ids"])
        if len(ids) > max_input_tokens:
            raise PromptTooLong(f"the prompt is {len(ids)} tokens; the maximum input length is {max_input_tokens}")
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


class TextStream:
    """Turns generated ids into text pieces, holding back what could still become a stop string.

    Pieces are emitted only once they are final: no half UTF-8 character, no prefix of a stop string.
    """

    def __init__(self, codec: TextCodec, stop: tuple[str, ...]):
        self.codec, self.stop = codec, stop
        self.ids: list[int] = []
        self.text = ""  # full decoded text so far
        self.sent = 0  # characters of `text` already emitted
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Adds one token; returns the newly final text (maybe empty). Sets `stopped` on a stop string."""
        self.ids.append(token_id)
        text = self.codec.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            return ""
        self.text = text
        cut = min((i for i in (text.find(s, max(0, self.sent - len(s))) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return self._emit(cut)
        hold = max((len(s) - 1 for s in self.stop), default=0)
        return self._emit(max(self.sent, len(text) - hold))

    def flush(self) -> str:
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        piece, self.sent = self.text[self.sent : upto], max(self.sent, upto)
        return piece
