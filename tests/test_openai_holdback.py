"""The stop-string hold-back the OpenAI routes stream through (node1/text.py TextStream): text that could
still be the start of a stop string is never emitted, and the pieces add up to the non-streamed text."""
import pytest

from node1.text import TextStream


class CharCodec:
    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def feed(text: str, stop: tuple[str, ...]):
    """Pushes text one character-token at a time; checks the hold-back after every push."""
    stream, shown = TextStream(CharCodec(), stop), ""
    for c in text:
        shown += stream.push(ord(c))
        so_far = stream.codec.decode(stream.ids)
        for s in stop:
            for k in range(1, len(s)):
                if so_far.endswith(s[:k]):  # still possibly the start of `s`: none of it may be out
                    assert len(shown) <= len(so_far) - k, (shown, so_far, s)
            assert s not in shown
        if stream.stopped:
            break
    return shown + stream.flush(), stream


@pytest.mark.parametrize("text, stop, expected", [
    ("The answer is 42. Done", ("42",), "The answer is "),
    ("abcabd", ("abd",), "abc"),
    ("no stop here", ("zzz",), "no stop here"),
    ("a wor word world!", ("world!",), "a wor word "),
    ("xy ends with a prefix wo", ("world",), "xy ends with a prefix wo"),  # length: the prefix was no stop
    ("first B then A", ("A", "B"), "first "),
])
def test_hold_back(text, stop, expected):
    shown, stream = feed(text, stop)
    assert shown == expected and stream.stopped == (expected != text)
