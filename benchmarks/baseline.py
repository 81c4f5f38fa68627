"""The unsplit baseline: transformers' own generate(), greedy, on the whole model in this process."""
import copy
import time

import torch


def in_dtype(model, dtype: torch.dtype):
    """The model in `dtype` for one section's baseline, leaving the shared float32 model as it was:
    `model.to(torch.bfloat16)` in place and back would leave every later section (q4_1's float32
    baseline) running weights rounded to bfloat16, whose tokens are not float32's."""
    return model if model.dtype == dtype else copy.deepcopy(model).to(dtype)


class Baseline:
    """The whole model served the usual way: `model.generate()`, batches left-padded with a mask."""

    def __init__(self, model, tokenizer):
        self.model, self.tok = model, tokenizer
        # SmolLM2's pad token is its EOS; the attention mask, not the id, is what keeps padding inert.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @torch.inference_mode()
    def generate(self, id_lists: list[list[int]], new_tokens: int, exact: bool = True) -> tuple[float, list[list[int]]]:
        """-> (seconds, each row's new tokens). `exact` forces `new_tokens` tokens (EOS suppressed until then)."""
        width = max(len(ids) for ids in id_lists)
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + ids for ids in id_lists])  # [B, T]
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in id_lists])  # [B, T]
        t0 = time.perf_counter()
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                                  max_new_tokens=new_tokens, min_new_tokens=new_tokens if exact else None,
                                  pad_token_id=self.pad_id)
        seconds = time.perf_counter() - t0
        return seconds, out[:, width:].tolist()

    def prefill_ms(self, ids: list[int]) -> float:
        """Time to first token as generate() gives it: the prompt's forward pass and one sampled token."""
        return self.generate([ids], 1)[0] * 1e3

    def decode_rate(self, ids: list[int], new_tokens: int, prefill_ms: float) -> tuple[float, list[int]]:
        """Tokens/s after the first token, (n - 1) / (total - prefill): how node1 reports its own rate."""
        seconds, out = self.generate([ids], new_tokens)
        return (new_tokens - 1) / (seconds - prefill_ms / 1e3), out[0]
