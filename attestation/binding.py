"""The 64 bytes of report data that bind a node's ephemeral public key to a challenger's nonce."""
import hashlib

DOMAIN_TAG = b"twintee/report-data/v1"
NONCE_BYTES = 32


def report_data(public_key: bytes, nonce: bytes) -> bytes:
    """SHA-512(tag || len(key) || key || len(nonce) || nonce): lengths keep the split unambiguous."""
    h = hashlib.sha512()
    h.update(DOMAIN_TAG)
    for part in (public_key, nonce):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()
