"""Wrapping a shard key to a node's attested X25519 key with HPKE (RFC 9180), and unwrapping it."""
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from attestation.canonical import hex_field

SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)
SUITE_NAME = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"
ENC_BYTES = KEM.X25519.enc_length()
_INFO_TAG = b"twintee/shard-key-wrap/v1"


class WrapError(Exception):
    """A wrapped key could not be opened (wrong recipient, wrong binding, or malformed)."""


def wrap_info(model_id: str, version: int, role: str, key_id: str) -> bytes:
    """HPKE info binding what the key is for. The single-shot API has no aad argument; RFC 9180
    section 8.1 says to bind such context through info, which enters the key schedule."""
    parts = [model_id.encode(), str(version).encode(), role.encode(), key_id.encode()]
    return _INFO_TAG + b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def wrap_key(shard_key: bytes, recipient_public_key: bytes, *, model_id: str, version: int,
             role: str, key_id: str) -> dict:
    """Seal shard_key to the raw 32-byte X25519 key; returns {"suite", "enc", "ciphertext"} (hex)."""
    recipient = X25519PublicKey.from_public_bytes(recipient_public_key)
    sealed = SUITE.encrypt(shard_key, recipient, info=wrap_info(model_id, version, role, key_id))
    # The single-shot output is enc || ciphertext; the wire keeps them apart, as RFC 9180 does.
    return {"suite": SUITE_NAME, "enc": sealed[:ENC_BYTES].hex(),
            "ciphertext": sealed[ENC_BYTES:].hex()}


def unwrap_key(wrapped: dict, recipient_private_key: X25519PrivateKey, *, model_id: str,
               version: int, role: str, key_id: str) -> bytes:
    """Open a wrap_key result with the recipient's private key; raises WrapError."""
    if not isinstance(wrapped, dict) or wrapped.get("suite") != SUITE_NAME:
        raise WrapError(f"wrapped key must be a {SUITE_NAME} object")
    enc, ciphertext = hex_field(wrapped.get("enc")), hex_field(wrapped.get("ciphertext"))
    if enc is None or ciphertext is None:
        raise WrapError("wrapped key needs hex 'enc' and 'ciphertext'")
    if len(enc) != ENC_BYTES:
        raise WrapError(f"enc must be {ENC_BYTES} bytes")
    try:
        return SUITE.decrypt(enc + ciphertext, recipient_private_key,
                             info=wrap_info(model_id, version, role, key_id))
    except InvalidTag:
        raise WrapError("wrapped key does not open: wrong recipient or wrong binding") from None
