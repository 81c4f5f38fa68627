"""The model manifest: what a release contains, signed with the model owner's Ed25519 key.

Document on disk (canonical JSON: sorted keys, compact) at `<data>/model/manifest.json`:
    {"body": {...}, "signature": hex, "public_key": hex}
The signature covers SIGNING_TAG || canonical_json(body), so it cannot be replayed as some other
signed object. Loaders pin the owner's public key; the key inside the document is only a hint that
lets "wrong owner key" be told apart from "bad signature".
"""
import json
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from attestation.canonical import canonical_json, hex_field
from attestation.evidence import NODE_ROLES
from attestation.files import write_atomic

SIGNING_TAG = b"twintee/manifest/v1\n"
MAX_MANIFEST_BYTES = 1 << 20
# Hugging Face style ids ("org/name"); every segment starts alphanumeric, so no ".." or "/x".
_MODEL_ID = re.compile(r"(?=.{1,128}\Z)[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_MODEL_ID_RULE = "model_id must be 1..128 chars of [A-Za-z0-9._-], optionally one 'org/' prefix"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_BODY_KEYS = {"model_id", "version", "split_layer", "num_layers", "config_sha256",
              "tokenizer_sha256", "created_at", "shards"}
_SHARD_KEYS = {"file", "plaintext_sha256", "ciphertext_sha256", "size", "key_id"}


class ManifestError(Exception):
    """A manifest was refused. `cause` is one of: malformed, unsigned, wrong_owner_key,
    bad_signature, rollback."""

    def __init__(self, cause: str, detail: str = ""):
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause
        self.detail = detail


def manifest_path(data_dir: Path) -> Path:
    return Path(data_dir) / "model" / "manifest.json"


def key_id(model_id: str, version: int, role: str) -> str:
    """The name of one shard key; it appears in the shard header, the manifest and the broker."""
    if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id):
        raise ValueError(_MODEL_ID_RULE)
    if not _is_int(version) or version < 0:
        raise ValueError("version must be a non-negative integer")
    if role not in NODE_ROLES:
        raise ValueError(f"role must be one of {NODE_ROLES}")
    return f"{model_id}:v{version}:{role}"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(ok: bool, detail: str) -> None:
    if not ok:
        raise ManifestError("malformed", detail)


def _check_shard(body: dict, role: str) -> None:
    shard = body["shards"].get(role)
    _require(isinstance(shard, dict) and set(shard) == _SHARD_KEYS,
             f"shards.{role} must have exactly the keys {sorted(_SHARD_KEYS)}")
    _require(isinstance(shard["file"], str) and bool(_FILE_NAME.fullmatch(shard["file"])),
             f"shards.{role}.file must be a plain file name")
    for field in ("plaintext_sha256", "ciphertext_sha256"):
        _require(isinstance(shard[field], str) and bool(_SHA256.fullmatch(shard[field])),
                 f"shards.{role}.{field} must be 64 lowercase hex digits")
    _require(_is_int(shard["size"]) and shard["size"] >= 0, f"shards.{role}.size must be >= 0")
    expected = key_id(body["model_id"], body["version"], role)
    _require(shard["key_id"] == expected, f"shards.{role}.key_id must be {expected!r}")


def validate_body(body) -> dict:
    """Check a manifest body's shape and consistency; raises ManifestError("malformed", ...)."""
    _require(isinstance(body, dict) and set(body) == _BODY_KEYS,
             f"body must have exactly the keys {sorted(_BODY_KEYS)}")
    _require(isinstance(body["model_id"], str) and bool(_MODEL_ID.fullmatch(body["model_id"])),
             _MODEL_ID_RULE)
    _require(_is_int(body["version"]) and body["version"] >= 0, "version must be an integer >= 0")
    _require(_is_int(body["num_layers"]) and body["num_layers"] >= 2, "num_layers must be >= 2")
    _require(_is_int(body["split_layer"]) and 0 < body["split_layer"] < body["num_layers"],
             "split_layer must satisfy 0 < split_layer < num_layers")
    for field in ("config_sha256", "tokenizer_sha256"):
        _require(isinstance(body[field], str) and bool(_SHA256.fullmatch(body[field])),
                 f"{field} must be 64 lowercase hex digits")
    created = body["created_at"]
    _require((_is_int(created) and created >= 0) or (isinstance(created, str) and bool(created)),
             "created_at must be unix seconds or a non-empty timestamp string")
    _require(isinstance(body["shards"], dict) and set(body["shards"]) == set(NODE_ROLES),
             f"shards must have exactly the roles {NODE_ROLES}")
    for role in NODE_ROLES:
        _check_shard(body, role)
    return body


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_manifest(body: dict, owner_private_key: Ed25519PrivateKey) -> dict:
    """Validate body and return the signed document {"body", "signature", "public_key"}."""
    validate_body(body)
    signature = owner_private_key.sign(SIGNING_TAG + canonical_json(body))
    return {"body": body, "signature": signature.hex(),
            "public_key": raw_public_key(owner_private_key.public_key()).hex()}


def write_manifest(path: Path, doc: dict) -> None:
    """Store doc as canonical JSON, atomically (attestation.files): readers never see half a file."""
    write_atomic(path, canonical_json(doc))


def _read_document(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise ManifestError("malformed", f"cannot read manifest: {e.strerror}") from None
    _require(len(raw) <= MAX_MANIFEST_BYTES, "manifest is too large")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ManifestError("malformed", "manifest is not valid JSON") from None
    _require(isinstance(doc, dict) and "body" in doc, "manifest has no body")
    return doc


def _hex_field(doc: dict, field: str, size: int) -> bytes:
    raw = hex_field(doc.get(field), size)
    _require(raw is not None, f"{field} must be {size} bytes of hex")
    return raw


def load_manifest(path: Path, owner_public_key: bytes, *, min_version: int = 0) -> dict:
    """Read, authenticate and check a manifest; returns its body or raises ManifestError."""
    doc = _read_document(path)
    if not doc.get("signature"):
        raise ManifestError("unsigned", "manifest carries no signature")
    signature = _hex_field(doc, "signature", 64)
    if _hex_field(doc, "public_key", 32) != owner_public_key:
        raise ManifestError("wrong_owner_key", "manifest is signed by a key other than the owner's")
    try:
        Ed25519PublicKey.from_public_bytes(owner_public_key).verify(
            signature, SIGNING_TAG + canonical_json(doc["body"]))
    except InvalidSignature:
        raise ManifestError("bad_signature", "signature does not match the body") from None
    body = validate_body(doc["body"])
    if body["version"] < min_version:
        raise ManifestError("rollback", f"version {body['version']} is below the minimum "
                                        f"{min_version}")
    return body


def read_public_key(path: Path) -> bytes:
    """The owner's raw 32-byte Ed25519 public key from a PEM, 64-hex-digit or raw 32-byte file."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path} does not hold an Ed25519 public key")
        return raw_public_key(key)
    if len(data) == 32:
        return data
    try:
        raw = hex_field(data.decode().strip(), 32)
    except UnicodeDecodeError:
        raw = None
    if raw is None:
        raise ValueError(f"{path} does not hold a 32-byte Ed25519 public key")
    return raw
