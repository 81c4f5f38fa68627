"""The client's use of the sealed format (shared/sealed_protocol.py owns both halves): read a sealed
reply's text/event-stream and open its events in order."""
from attestation.canonical import json_object
from shared.sealed_protocol import EventOpener, SealedStreamError, seal_request

__all__ = ["EventOpener", "SealedStreamError", "open_stream", "seal_request", "sse_data"]


def sse_data(lines):
    """The `data:` payloads of a text/event-stream, one per event."""
    for line in lines:
        if line and line.startswith("data: "):
            yield line[len("data: "):]


def open_stream(lines, key: bytes):
    """Yields each opened event as a dict; raises SealedStreamError if the stream ends unsealed."""
    opener = EventOpener(key)
    for data in sse_data(lines):
        payload = opener.open(data)
        if opener.done:
            return
        event = json_object(payload)
        if event is None:
            raise SealedStreamError(f"sealed event {opener.index - 1} opened to something other than a JSON object")
        yield event
    raise SealedStreamError(f"the stream ended after {opener.index} events without its sealed end")
