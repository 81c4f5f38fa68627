"""The node side of key release: prove this enclave to the broker and receive its shard key."""
from typing import Callable

import requests
import urllib3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from attestation.canonical import hex_field, json_object
from attestation.binding import KEY_REQUEST, NONCE_BYTES, report_data
from attestation.key_wrap import WrapError, unwrap_key
from attestation.manifest import key_id as make_key_id


class KeyReleaseError(Exception):
    """The broker did not release the key; the message carries the broker's own error text."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


# The broker answers with a nonce or a wrapped key: well under a kilobyte. Whatever answers on its
# address is outside input until the key it wraps opens, and is not trusted with this process's memory.
MAX_ANSWER_BYTES = 1 << 16


def _post(session, url: str, payload: dict, timeout: float) -> dict:
    try:
        with session.post(url, json=payload, timeout=timeout, stream=True) as resp:
            raw = resp.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
        raise KeyReleaseError(f"broker unreachable at {url}: {type(e).__name__}") from None
    if len(raw) > MAX_ANSWER_BYTES:
        raise KeyReleaseError(f"broker's answer to {url} is over {MAX_ANSWER_BYTES} bytes", resp.status_code)
    body = json_object(raw)  # strict: 60,000 nested brackets were a RecursionError out of the loader
    if resp.status_code != 200:
        message = body.get("error") if body is not None else None
        raise KeyReleaseError(f"broker refused ({resp.status_code}): "
                              f"{message or 'no error message'}", resp.status_code)
    if body is None:
        raise KeyReleaseError(f"broker answered {url} with something other than a JSON object")
    return body


def _issued_nonce(answer: dict) -> bytes:
    nonce = hex_field(answer.get("nonce"), NONCE_BYTES)
    if nonce is None:
        raise KeyReleaseError(f"broker's nonce is not {NONCE_BYTES} bytes of hex")
    return nonce


def fetch_shard_key(broker_url: str, *, role: str, model_id: str, version: int,
                    attester: Callable[[bytes], dict], session=None,
                    timeout: float = 10) -> tuple[str, bytes]:
    """(key_id, 32-byte shard key). attester(report_data) returns this enclave's evidence."""
    expected_key_id = make_key_id(model_id, version, role)
    base = broker_url.rstrip("/")
    http = session if session is not None else requests.Session()
    try:
        # A fresh key per fetch: the wrapped key opens only inside the process that made it.
        private = X25519PrivateKey.generate()
        public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
        nonce = _issued_nonce(_post(http, f"{base}/nonce", {}, timeout))
        evidence = attester(report_data(public, nonce, purpose=KEY_REQUEST))
        answer = _post(http, f"{base}/key", {
            "role": role, "model_id": model_id, "version": version,
            "public_key": public.hex(), "nonce": nonce.hex(), "evidence": evidence}, timeout)
    finally:
        if session is None:
            http.close()
    if answer.get("key_id") != expected_key_id:
        raise KeyReleaseError(f"broker released {answer.get('key_id')!r}, "
                              f"expected {expected_key_id!r}")
    try:
        key = unwrap_key(answer.get("wrapped"), private, model_id=model_id, version=version,
                         role=role, key_id=expected_key_id)
    except WrapError as e:
        raise KeyReleaseError(f"released key does not open: {e}") from None
    return expected_key_id, key
