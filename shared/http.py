"""HTTP request parsing both nodes share: the /attestation challenge nonce and JSON bodies as ApiErrors.

The JSON error handlers, ApiError and /metrics every service uses live in attestation/service.py.
"""
from attestation.canonical import JsonError, hex_field, read_json_request
from attestation.service import ApiError


CHALLENGE_BYTES = (16, 64)  # a challenger's nonce for /attestation, both nodes alike


def challenge_nonce(value: str) -> bytes:
    """The `nonce` query parameter of GET /attestation: 16 to 64 bytes of hex, else a 400."""
    nonce = hex_field(value, CHALLENGE_BYTES)
    if nonce is None:
        hex_of_wrong_size = hex_field(value) is not None
        raise ApiError(400, f"nonce must be {CHALLENGE_BYTES[0]} to {CHALLENGE_BYTES[1]} bytes of hex"
                       if hex_of_wrong_size else "nonce must be hex")
    return nonce


def json_body(req, max_bytes: int) -> object:
    """The request's JSON value, or the 4xx attestation.canonical.read_json_request names."""
    try:
        return read_json_request(req, max_bytes)
    except JsonError as exc:
        raise ApiError(exc.status, str(exc)) from None
