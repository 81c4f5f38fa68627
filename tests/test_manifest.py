"""Tests for attestation/manifest.py: signing, storage, and every refusal named."""
import copy
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.canonical import canonical_json
from attestation.manifest import (SIGNING_TAG, ManifestError, key_id, load_manifest, manifest_path,
                             raw_public_key, read_public_key, sign_manifest, write_manifest)

OWNER = Ed25519PrivateKey.generate()
OWNER_PUB = raw_public_key(OWNER.public_key())


def make_body(version: int = 3, model_id: str = "smollm2-135m") -> dict:
    def shard(role):
        return {"file": f"{role}.shard", "plaintext_sha256": "a" * 64,
                "ciphertext_sha256": "b" * 64, "size": 1234,
                "key_id": key_id(model_id, version, role)}
    return {"model_id": model_id, "version": version, "split_layer": 15, "num_layers": 30,
            "config_sha256": "c" * 64, "tokenizer_sha256": "d" * 64,
            "created_at": "2025-01-01T00:00:00Z", "shards": {"node1": shard("node1"),
                                                              "node2": shard("node2")}}


@pytest.fixture
def path(tmp_path):
    p = manifest_path(tmp_path)
    write_manifest(p, sign_manifest(make_body(), OWNER))
    return p


def edit(path, fn):
    doc = json.loads(path.read_bytes())
    fn(doc)
    path.write_bytes(canonical_json(doc))


def refusal(path, pub=OWNER_PUB, **kw) -> str:
    with pytest.raises(ManifestError) as e:
        load_manifest(path, pub, **kw)
    return e.value.cause


def test_round_trip_and_canonical_storage(path, tmp_path):
    assert path == tmp_path / "model" / "manifest.json"
    assert load_manifest(path, OWNER_PUB) == make_body()
    raw = path.read_bytes()
    assert raw == canonical_json(json.loads(raw))  # sorted keys, no spaces


def test_key_id_names_model_version_role():
    assert key_id("m", 2, "node2") == "m:v2:node2"
    assert key_id("HuggingFaceTB/SmolLM2-135M-Instruct", 1, "node1").endswith(":v1:node1")
    for bad in [("m", 2, "node3"), ("m/..", 2, "node1"), ("/m", 2, "node1"), ("a/b/c", 2, "node1"),
                ("m", -1, "node1"), ("m", True, "node1"), ("m" * 129, 1, "node1")]:
        with pytest.raises(ValueError):
            key_id(*bad)


def test_tampered_body_bad_signature(path):
    edit(path, lambda d: d["body"]["shards"]["node1"].update(plaintext_sha256="e" * 64))
    assert refusal(path) == "bad_signature"


def test_tampered_signature(path):
    edit(path, lambda d: d.update(signature="00" * 64))
    assert refusal(path) == "bad_signature"


@pytest.mark.parametrize("value", [None, ""])
def test_unsigned(path, value):
    edit(path, lambda d: d.update(signature=value))
    assert refusal(path) == "unsigned"


def test_unsigned_when_field_missing(path):
    edit(path, lambda d: d.pop("signature"))
    assert refusal(path) == "unsigned"


def test_signed_by_another_key(path):
    write_manifest(path, sign_manifest(make_body(), Ed25519PrivateKey.generate()))
    assert refusal(path) == "wrong_owner_key"


def test_embedded_key_swapped_to_owner_is_still_bad(path):
    write_manifest(path, sign_manifest(make_body(), Ed25519PrivateKey.generate()))
    edit(path, lambda d: d.update(public_key=OWNER_PUB.hex()))
    assert refusal(path) == "bad_signature"


def test_loader_pins_a_different_owner(path):
    other = raw_public_key(Ed25519PrivateKey.generate().public_key())
    assert refusal(path, pub=other) == "wrong_owner_key"


def test_rollback(path):
    assert load_manifest(path, OWNER_PUB, min_version=3)["version"] == 3
    assert refusal(path, min_version=4) == "rollback"


@pytest.mark.parametrize("breakage", [
    lambda b: b.pop("created_at"),
    lambda b: b.update(created_at=""),
    lambda b: b.update(extra=1),
    lambda b: b.update(split_layer=30),
    lambda b: b.update(version="3"),
    lambda b: b["shards"].pop("node2"),
    lambda b: b["shards"]["node1"].update(file="../../etc/passwd"),
    lambda b: b["shards"]["node2"].update(key_id="smollm2-135m:v3:node1"),
    lambda b: b["shards"]["node1"].update(size=-1),
])
def test_malformed_body_cannot_be_signed_or_loaded(path, breakage):
    body = make_body()
    breakage(body)
    with pytest.raises(ManifestError) as e:
        sign_manifest(body, OWNER)
    assert e.value.cause == "malformed"
    # Signed anyway (bypassing our validation): the loader still refuses it.
    doc = {"body": body, "signature": OWNER.sign(SIGNING_TAG + canonical_json(body)).hex(),
           "public_key": OWNER_PUB.hex()}
    path.write_bytes(canonical_json(doc))
    assert refusal(path) == "malformed"


@pytest.mark.parametrize("content", [b"", b"not json", b"[]", b'{"signature":"00"}'])
def test_garbage_is_malformed(path, content):
    path.write_bytes(content)
    assert refusal(path) == "malformed"


def test_missing_file_is_malformed(tmp_path):
    assert refusal(tmp_path / "nope.json") == "malformed"


def test_signature_input_is_canonical_not_file_bytes(path):
    doc = json.loads(path.read_bytes())
    path.write_text(json.dumps(copy.deepcopy(doc), indent=2))  # same values, other layout
    assert load_manifest(path, OWNER_PUB)["version"] == 3


@pytest.mark.parametrize("form", ["pem", "hex", "raw"])
def test_read_public_key_forms(tmp_path, form):
    pub = OWNER.public_key()
    data = {"pem": pub.public_bytes(serialization.Encoding.PEM,
                                    serialization.PublicFormat.SubjectPublicKeyInfo),
            "hex": OWNER_PUB.hex().encode() + b"\n", "raw": OWNER_PUB}[form]
    (tmp_path / "owner.pub").write_bytes(data)
    assert read_public_key(tmp_path / "owner.pub") == OWNER_PUB
