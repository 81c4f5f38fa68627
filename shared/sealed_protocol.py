"""The client <-> node1 sealed message format, both halves: node1 opens requests and seals reply
events (node1/sealed.py serves them), the Python client seals requests and opens events
(client/sealed.py); the page's webui/sealed.js speaks the same format, its constants checked
against these by tests/test_sealed_protocol.py.

  request   {"enc": hex, "ciphertext": hex}: HPKE base mode (RFC 9180), DHKEM(X25519, HKDF-SHA256),
            HKDF-SHA256, AES-256-GCM, info = INFO, empty aad, sealed to the X25519 key node1 attests
            in /attestation. Plaintext: {"request": <a /generate body>, "response_key": 32 bytes hex}.
  reply     event i is hex(nonce || AES-256-GCM(response_key, nonce, payload, aad = event_ad(i))),
            where payload is exactly what plain /generate would stream (a token event, then the
            summary or an error), and the last event's payload is DONE. The reader counts i itself,
            so a dropped, reordered or injected event fails to open, and a stream that ends before
            a sealed DONE was cut short.
"""
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from attestation.canonical import JsonError, hex_field, parse_json

INFO = b"twintee/sealed-generate/v1"
EVENT_AD = b"twintee/sealed-event/v1"
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
ENC_BYTES = 32  # an X25519 encapsulated key
KEY_BYTES = 32  # the response key
INDEX_BYTES = 8  # an event's index in its associated data, big-endian
# Random, not counter, nonces: a host can replay a sealed request, and node1 would then seal a second
# (sampled, different) reply under the same response key; counter nonces would repeat across the two.
NONCE_BYTES = 12
DONE = "[DONE]"


class SealedRequestError(ValueError):
    """A sealed request could not be decoded or opened (node1 answers 400 naming which part)."""


class SealedStreamError(Exception):
    """The sealed reply was tampered with, reordered, cut short or malformed."""


def event_ad(index: int) -> bytes:
    return EVENT_AD + index.to_bytes(INDEX_BYTES, "big")


# --- The request: the client seals, node1 opens ---------------------------------------------

def seal_request(body: dict, node1_public_key: bytes) -> tuple[dict, bytes]:
    """-> ({"enc", "ciphertext"} to POST, the fresh response key the reply is sealed under)."""
    key = os.urandom(KEY_BYTES)
    plain = json.dumps({"request": body, "response_key": key.hex()}).encode()
    sealed = SUITE.encrypt(plain, X25519PublicKey.from_public_bytes(node1_public_key), info=INFO)
    return {"enc": sealed[:ENC_BYTES].hex(), "ciphertext": sealed[ENC_BYTES:].hex()}, key


def open_request(body, private_key: X25519PrivateKey) -> tuple[dict, bytes]:
    """{"enc", "ciphertext"} -> (the inner /generate body, the response key), or SealedRequestError."""
    if not isinstance(body, dict):
        raise SealedRequestError("the body must be a JSON object with 'enc' and 'ciphertext'")
    enc, ciphertext = _hex(body, "enc"), _hex(body, "ciphertext")
    if len(enc) != ENC_BYTES:
        raise SealedRequestError(f"'enc' must be {ENC_BYTES} bytes (an X25519 public key)")
    try:
        plain = SUITE.decrypt(enc + ciphertext, private_key, info=INFO)
    except (InvalidTag, ValueError):
        raise SealedRequestError("the sealed request does not open with node1's attested key") from None
    try:  # the one strict reader: anyone can seal to node1's public key, so this is outside input
        inner = parse_json(plain)
    except JsonError as exc:
        raise SealedRequestError(f"the opened request: {exc}") from None
    if not isinstance(inner, dict) or "request" not in inner or not isinstance(inner.get("response_key"), str):
        raise SealedRequestError("the opened request must be {\"request\": {...}, \"response_key\": hex}")
    key = hex_field(inner["response_key"], KEY_BYTES)
    if key is None or not isinstance(inner["request"], dict):
        raise SealedRequestError(f"'response_key' must be {KEY_BYTES} bytes of hex and 'request' an object")
    return inner["request"], key


def _hex(body: dict, name: str) -> bytes:
    value = body.get(name)
    if not isinstance(value, str):
        raise SealedRequestError(f"'{name}' must be a hex string")
    raw = hex_field(value, len(value) // 2)  # any length: the caller checks the size it needs
    if raw is None:
        raise SealedRequestError(f"'{name}' is not valid hex")
    return raw


# --- The reply: node1 seals events, the client opens them ------------------------------------

def seal_events(payloads, key: bytes):
    """Seals each payload (str) in order -> hex events; the caller ends the payloads with DONE."""
    aead = AESGCM(key)
    for index, payload in enumerate(payloads):
        nonce = os.urandom(NONCE_BYTES)
        yield (nonce + aead.encrypt(nonce, payload.encode(), event_ad(index))).hex()


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
