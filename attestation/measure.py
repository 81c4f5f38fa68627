"""Reference measurements: digests of the code a role runs, its model manifest and its security config."""
import hashlib
from pathlib import Path

from attestation.errors import MeasureError
from attestation.canonical import canonical_json, hex_field
from attestation.evidence import COMPONENTS, ROLES

MEASUREMENT_TAG = b"twintee/measurement/v1"
# Exactly what each process runs (and its image copies): the owner's release/ tooling, the launcher,
# the client and the tests run in no node, so no measurement covers them.
ROLE_DIRS = {
    "node1": ("node1", "webui", "shared", "attestation"),
    "node2": ("node2", "shared", "attestation"),
    "broker": ("broker", "attestation"),
}
# What a process runs beside Python: the page's files, and the q4 kernel's C++ source, which the node
# compiles at setup and loads (a changed kernel must change the measurement).
SUFFIXES = {"webui": (".py", ".html", ".js", ".css"), "shared": (".py", ".cpp", ".h")}
DEFAULT_SUFFIXES = (".py",)
# Tests and bytecode caches never run in a node, and caches differ between machines.
EXCLUDED_PARTS = {"__pycache__", "tests"}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def role_files(project_root: Path, role: str) -> list[Path]:
    """The files `role` runs, sorted by their path relative to the project root."""
    if role not in ROLE_DIRS:
        raise MeasureError(f"unknown role {role!r}; expected one of {list(ROLE_DIRS)}")
    root = Path(project_root).resolve()
    files = []
    for folder in ROLE_DIRS[role]:
        suffixes = SUFFIXES.get(folder, DEFAULT_SUFFIXES)
        for path in (root / folder).rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and path.suffix in suffixes and not EXCLUDED_PARTS & set(rel.parts):
                files.append(rel)
    if not files:
        raise MeasureError(f"no files to measure for {role} under {root}")
    return sorted(files, key=lambda p: p.as_posix())


def code_digest(project_root: Path, role: str) -> str:
    """SHA-256 over the sorted (relative path, SHA-256 of bytes) pairs of the role's files."""
    root = Path(project_root).resolve()
    h = hashlib.sha256()
    for rel in role_files(root, role):
        # NUL and newline never occur in these names, so the encoding cannot be shifted.
        h.update(rel.as_posix().encode() + b"\0" + _sha256((root / rel).read_bytes()).encode() + b"\n")
    return h.hexdigest()


def config_digest(security_config: dict) -> str:
    return _sha256(canonical_json(security_config))


def combine(components: dict) -> str:
    """The measurement: SHA-256 over a domain tag and the three 32-byte components, in a fixed order."""
    return _sha256(MEASUREMENT_TAG + b"".join(bytes.fromhex(components[name]) for name in COMPONENTS))


def measure_node(project_root: Path, role: str, manifest_sha256: str, security_config: dict) -> dict:
    """-> {"role", "measurement", "components": {"code", "manifest", "config"}} for one role."""
    if role not in ROLES:
        raise MeasureError(f"unknown role {role!r}")
    if hex_field(manifest_sha256, 32) is None:
        raise MeasureError("manifest_sha256 must be 64 hex characters")
    components = {
        "code": code_digest(project_root, role),
        "manifest": manifest_sha256.lower(),
        "config": config_digest(security_config),
    }
    return {"role": role, "measurement": combine(components), "components": components}


def differing_components(expected: dict, actual: dict) -> list[str]:
    """Names of the components whose digests differ, so a refusal can say what changed."""
    return [name for name in COMPONENTS if expected.get(name) != actual.get(name)]
