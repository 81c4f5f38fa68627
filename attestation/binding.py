"""The 64 bytes of report data that bind a party's public key, a challenger's nonce and the purpose
the evidence is for.

Evidence is only good for the use it was made for: node1 answers anyone's `/attestation` challenge
(a client checking it), so evidence bound to nothing but (key, nonce) could be relayed into node2's
handshake or a key request over that party's nonce (issue 12: an outsider completed node2's
handshake that way). Every verifier demands the purpose it expects.
"""
import hashlib

DOMAIN_TAG = b"twintee/report-data/v2"
NONCE_BYTES = 32
PEER_HANDSHAKE = "peer-handshake"  # node1 <-> node2 channel set-up (shared/handshake.py)
CLIENT_ATTESTATION = "client-attestation"  # a page or client challenging a node (GET /attestation)
KEY_REQUEST = "key-request"  # a node asking the broker for its shard key
# node1's Ed25519 response-signing key (GET /v1/attestation/report): its own purpose, so evidence
# vouching for the key node1 signs completions with is never a key anyone can open a channel to or
# receive a shard key at, nor the reverse.
RESPONSE_SIGNING = "response-signing"
LEDGER_SIGNER = "ledger-signer"  # node1's key that signs the usage ledger's chain (node1/ledger.py)
PURPOSES = (PEER_HANDSHAKE, CLIENT_ATTESTATION, KEY_REQUEST, RESPONSE_SIGNING, LEDGER_SIGNER)


def report_data(public_key: bytes, nonce: bytes, *, purpose: str) -> bytes:
    """SHA-512(tag || len || purpose || len || key || len || nonce): lengths keep the split unambiguous."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}")
    h = hashlib.sha512()
    h.update(DOMAIN_TAG)
    for part in (purpose.encode(), public_key, nonce):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()
