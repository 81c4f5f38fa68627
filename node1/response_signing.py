"""node1's response-signing key and what it signs: for each completion, SHA-256 of the exact request
body bytes and of the exact response bytes (for a stream, the whole SSE byte stream as sent), as
"<request sha256>:<response sha256>" under Ed25519, the record kept by id in the signature store.

The text and the record follow Phala's vllm-proxy (GET /v1/signature/{id}), so a client written for it
reads ours; its key is bound into node1's evidence under its own purpose (GET /v1/attestation/report).
"""
import hashlib
import json
import logging

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Response

from node1.signature_store import SignatureRecord, SignatureStore
from shared.http import json_body
from shared.sealed_protocol import DONE

log = logging.getLogger("twintee.node1.signing")
SIGNING_ALGO = "ed25519"
LAST_EVENT = f"data: {DONE}\n\n".encode()  # every OpenAI stream ends with it, after a failure too


class ResponseSigner:
    """Holds the key, made in this process at start: never written to disk, never logged, gone on exit
    (a restarted node1 has a new key, and its predecessor's records die with it)."""

    def __init__(self, records: int):
        self._key = Ed25519PrivateKey.generate()
        self.public_key = self._key.public_key().public_bytes_raw()
        self.store = SignatureStore(records)

    def __repr__(self) -> str:
        return f"ResponseSigner(public_key={self.public_key.hex()[:16]}…, records={len(self.store)})"

    def sign(self, rid: str, request_sha256: str, response_sha256: str) -> SignatureRecord:
        text = f"{request_sha256}:{response_sha256}"
        record = SignatureRecord(rid, text, self._key.sign(text.encode()).hex())
        self.store.put(record)
        log.info("signed id=%s", rid)
        return record

    def signed(self, request_bytes: bytes, resp: Response) -> Response:
        """`resp`, whose bytes are signed with `request_bytes` once they are all known: at once for a JSON
        reply, with its last event for a stream (one the client left before that is not signed)."""
        request_sha = hashlib.sha256(request_bytes).hexdigest()
        if resp.is_streamed:
            resp.response = self._hashing(resp.response, request_sha)
            return resp
        body = resp.get_data()
        rid = _completion_id(body)
        if rid is not None:
            self.sign(rid, request_sha, hashlib.sha256(body).hexdigest())
        return resp

    def _hashing(self, chunks, request_sha: str):
        """The stream's chunks as bytes, hashed on their way out; the id is the first event's."""
        h, rid = hashlib.sha256(), None
        try:
            for i, chunk in enumerate(chunks):
                data = chunk.encode() if isinstance(chunk, str) else chunk
                h.update(data)
                if i == 0:  # one event per chunk (node1.generate.sse): "data: {...}\n\n"
                    rid = _completion_id(data.removeprefix(b"data: "))
                if data == LAST_EVENT and rid is not None:
                    # Signed before the last event goes out: a client that has read [DONE] finds the record.
                    self.sign(rid, request_sha, h.hexdigest())
                yield data  # a client leaving raises GeneratorExit here: a stream cut short is never signed
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # the client went away: the choices behind the stream are cancelled at once


def _completion_id(data: bytes) -> str | None:
    """The `id` of a completion or of a stream's first chunk; our own bytes, so anything else is no id."""
    try:
        rid = json.loads(data).get("id")
    except (ValueError, AttributeError):
        return None
    return rid if isinstance(rid, str) else None


class _Recording:
    """Flask's request as attestation.canonical.read_json_request reads it (mimetype, length, stream),
    keeping the bytes it read: the signature hashes exactly the bytes the request was parsed from."""

    def __init__(self, req):
        self.mimetype, self.content_length, self._stream = req.mimetype, req.content_length, req.stream
        self.raw = b""

    @property
    def stream(self):
        return self

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.raw += data
        return data


def signed_body(req, max_bytes: int) -> tuple[object, bytes]:
    """-> (the request's JSON value, the exact bytes it came from); the 4xx errors are json_body's."""
    recording = _Recording(req)
    return json_body(recording, max_bytes), recording.raw

