"""attestation/canonical.py's hex_field: the one parser of "N bytes of hex" from outside, and its
callers; and json_object, the reader of answers from peers not trusted yet."""
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.canonical import hex_field, json_object
from attestation.errors import EvidenceError, MeasureError, PolicyError, ProviderError
from attestation.evidence import hex_bytes
from attestation.key_wrap import WrapError, unwrap_key
from attestation.manifest import read_public_key
from attestation.measure import measure_node
from attestation.policy import load_policy
from attestation.providers.simulated import verify_certificate
from broker.kms import KmsError, load_master_key
from shared.handshake import HandshakeError, M1_FIELDS, _parse
from shared.http import ApiError, challenge_nonce


@pytest.mark.parametrize("value, size, expected", [
    ("00ff", 2, b"\x00\xff"),
    ("00FF", 2, b"\x00\xff"),  # either case, unless lowercase is asked for
    ("", None, b""),
    ("ab" * 16, (16, 64), b"\xab" * 16),
    ("ab" * 64, (16, 64), b"\xab" * 64),
    ("abcdef", None, bytes.fromhex("abcdef")),
])
def test_hex_field_accepts(value, size, expected):
    assert hex_field(value, size) == expected


@pytest.mark.parametrize("value, size", [
    ("00ff", 3), ("00ff", 1),  # wrong length
    ("ab" * 15, (16, 64)), ("ab" * 65, (16, 64)),  # outside the range
    (" 00ff ", None), ("00  ff", None), ("00ff\n\n", None),  # bytes.fromhex would skip the whitespace
    ("0", None), ("zz", None), ("0x00", None), ("+0", None),
    (None, None), (b"00", None), (16, None), (["00"], None), ({"a": 1}, None),
    ("é" * 2, None),
])
def test_hex_field_refuses_with_none(value, size):
    assert hex_field(value, size) is None


def test_hex_field_lowercase_and_length_checked_before_decoding():
    assert hex_field("AB", 1, lowercase=True) is None and hex_field("ab", 1, lowercase=True) == b"\xab"
    # A megabyte of junk where 32 bytes are expected is refused on its length alone.
    assert hex_field("zz" * (1 << 20), 32) is None


# Every caller that parses hex from outside refuses whitespace-padded or wrong-length hex with its
# own named error, as it did before the parser was shared.
def _wrapped(enc, ciphertext="00" * 48):
    return {"suite": "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM", "enc": enc, "ciphertext": ciphertext}


def _m1(nonce):
    return {"version": "twintee-handshake/1", "role": "node1", "nonce": nonce, "public_key": "11" * 32}


@pytest.mark.parametrize("call, error, message", [
    (lambda: challenge_nonce("00 " * 16), ApiError, "nonce must be hex"),
    (lambda: challenge_nonce("00" * 8), ApiError, "nonce must be 16 to 64 bytes of hex"),
    (lambda: _parse(_m1("AB" * 32), M1_FIELDS), HandshakeError, "lowercase hex"),
    (lambda: _parse(_m1("ab" * 31), M1_FIELDS), HandshakeError, "lowercase hex"),
    (lambda: hex_bytes("00 11", None, "quote"), EvidenceError, "quote is not valid hex"),
    (lambda: hex_bytes("0011", 3, "measurement"), EvidenceError, "must be 3 bytes, got 2"),
    (lambda: hex_bytes(7, 3, "measurement"), EvidenceError, "must be a hex string"),
    (lambda: unwrap_key(_wrapped("00 " * 32), None, model_id="m", version=1, role="node1", key_id="k"),
     WrapError, "needs hex"),
    (lambda: unwrap_key(_wrapped("00" * 31), None, model_id="m", version=1, role="node1", key_id="k"),
     WrapError, "enc must be 32 bytes"),
    (lambda: verify_certificate({"body": {"platform_public_key": "00" * 32}, "signature": "00 " * 64}, bytes(32)),
     ProviderError, "not signed by the pinned simulated root"),
    (lambda: load_policy({"body": {}, "signature": " " + "00" * 64}, bytes(32)), PolicyError, "does not verify"),
    (lambda: load_master_key(hex_value="00 " * 32), KmsError, "64 hex digits"),
    (lambda: load_master_key(hex_value="00" * 31), KmsError, "64 hex digits"),
    (lambda: measure_node(".", "node1", "00" * 31, {}), MeasureError, "64 hex characters"),
])
def test_each_caller_keeps_its_named_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("content, ok", [
    (lambda raw: raw.hex().encode() + b"\n", True),  # a trailing newline is stripped, as before
    (lambda raw: raw.hex().upper().encode(), True),
    (lambda raw: raw, True),
    (lambda raw: raw.hex()[:-2].encode(), False),
    (lambda raw: " ".join(raw.hex()[i:i + 2] for i in range(0, 64, 2)).encode(), False),
])
def test_public_key_file_reader(tmp_path, content, ok):
    raw = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    path = tmp_path / "owner.pub"
    path.write_bytes(content(raw))
    if ok:
        assert read_public_key(path) == raw
    else:
        with pytest.raises(ValueError, match="32-byte Ed25519 public key"):
            read_public_key(path)


@pytest.mark.parametrize("raw", ["[" * 60_000, "[1]", "not json", '"text"', b"\xff"], ids=["nested", "list", "not-json", "string", "not-utf8"])
def test_anything_but_a_json_object_is_none(raw):
    assert json_object(raw) is None


def test_a_json_object_is_itself():
    assert json_object(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
