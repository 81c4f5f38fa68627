"""The client half of node1's sealed protocol (node1/sealed.py documents it): seal a request, open the reply."""
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.sealed_protocol import DONE, ENC_BYTES, INFO, KEY_BYTES, NONCE_BYTES, SUITE, event_ad


class SealedStreamError(Exception):
    """The sealed reply was tampered with, reordered, cut short or malformed."""


def seal_request(body: dict, node1_public_key: bytes) -> tuple[dict, bytes]:
    """-> ({"enc", "ciphertext"} to POST, the fresh response key the reply is sealed under)."""
    key = os.urandom(KEY_BYTES)
    plain = json.dumps({"request": body, "response_key": key.hex()}).encode()
    sealed = SUITE.encrypt(plain, X25519PublicKey.from_public_bytes(node1_public_key), info=INFO)
    return {"enc": sealed[:ENC_BYTES].hex(), "ciphertext": sealed[ENC_BYTES:].hex()}, key


class EventOpener:
    """Opens sealed events in order; its own counter is the associated data, so gaps and swaps fail."""

    def __init__(self, key: bytes):
        self.aead, self.index, self.done = AESGCM(key), 0, False

    def open(self, sealed_hex: str) -> str:
        if self.done:
            raise SealedStreamError("an event arrived after the sealed end of stream")
        try:
            raw = bytes.fromhex(sealed_hex)
            nonce, ct = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
            payload = self.aead.decrypt(nonce, ct, event_ad(self.index)).decode()
        except (ValueError, InvalidTag):
            raise SealedStreamError(f"event {self.index} does not open: dropped, reordered or altered") from None
        self.index += 1
        self.done = payload == DONE
        return payload


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
        yield json.loads(payload)
    raise SealedStreamError(f"the stream ended after {opener.index} events without its sealed end")
