"""Streaming detokenization and stop strings on the real SmolLM2 tokenizer."""
import pytest

from node1.text import PromptTooLong, TextCodec, TextStream


@pytest.fixture(scope="module")
def codec(release_dir):
    import json

    return TextCodec(release_dir / "model" / "tokenizer", json.loads((release_dir / "model" / "config.json").read_text()))


def stream_all(codec, text, stop=()):
    s = TextStream(codec, stop)
    pieces = []
    for t in codec.tok.encode(text):
        pieces.append(s.push(t))
        if s.stopped:
            break
    pieces.append(s.flush())
    return "".join(pieces), s


def test_pieces_join_to_the_full_text_including_multibyte(codec):
    text = "Héllo wörld — naïve café 東京 🙂 done."
    joined, s = stream_all(codec, text)
    assert joined == text and not s.stopped


def test_stop_string_cuts_text_and_is_never_emitted(codec):
    joined, s = stream_all(codec, "First line.\nSecond line.\nThird.", stop=("Second",))
    assert s.stopped and joined == "First line.\n"


def test_chat_template_and_length_limit(codec):
    ids = codec.encode_chat([{"role": "user", "content": "hi"}], 100)
    assert codec.tok.decode(ids).startswith("<|im_start|>")
    with pytest.raises(PromptTooLong, match="maximum input length is 5"):
        codec.encode_chat([{"role": "user", "content": "hello there, how are you?"}], 5)
    assert 2 in codec.eos_ids
