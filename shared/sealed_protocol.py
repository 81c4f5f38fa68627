"""The client <-> node1 sealed protocol's constants: one place, so the two ends cannot drift apart.

A request is HPKE-sealed (RFC 9180 base mode) to node1's attested X25519 key with `INFO`; its reply
is a stream of AES-256-GCM events under the response key the request carried, each bound to its
index by `event_ad`, ending with a sealed `DONE`.
"""
from cryptography.hazmat.primitives import hpke

INFO = b"twintee/sealed-generate/v1"
EVENT_AD = b"twintee/sealed-event/v1"
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
ENC_BYTES = 32  # an X25519 encapsulated key
KEY_BYTES = 32  # the response key
# Random, not counter, nonces: a host can replay a sealed request, and node1 would then seal a second
# (sampled, different) reply under the same response key; counter nonces would repeat across the two.
NONCE_BYTES = 12
DONE = "[DONE]"


def event_ad(index: int) -> bytes:
    return EVENT_AD + index.to_bytes(8, "big")
