"""A SIMULATED TEE (software keys standing in for hardware): it protects nothing against a host that can read sim_dir."""
import json
import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attestation.errors import ProviderError
from attestation.canonical import canonical_json, hex_field
from attestation.evidence import make_body
from attestation.files import KeyFileError, ensure_ed25519_key, load_private_key, write_private_file

ROOT_KEY = "vendor-root.key"
PLATFORM_KEY = "platform.key"
CERTIFICATE = "platform-cert.json"
ISSUER = "twintee-SIMULATED-vendor-root"


def raw_public(key) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def certify(root: Ed25519PrivateKey, platform_public: bytes, issued_at: float) -> dict:
    body = {"issuer": ISSUER, "platform_public_key": platform_public.hex(), "issued_at": issued_at}
    return {"body": body, "signature": root.sign(canonical_json(body)).hex()}


def verify_certificate(cert, root_public: bytes) -> bytes:
    """-> the certified platform public key, or ProviderError if the chain to `root_public` breaks."""
    try:
        body, signature = cert["body"], hex_field(cert["signature"], 64)
        if signature is None:
            raise InvalidSignature
        Ed25519PublicKey.from_public_bytes(root_public).verify(signature, canonical_json(body))
        platform = hex_field(body["platform_public_key"], 32)
        if platform is None:
            raise ValueError
    except (KeyError, TypeError, ValueError, InvalidSignature):
        raise ProviderError("platform certificate is not signed by the pinned simulated root") from None
    return platform


def init_simulated_platform(sim_dir: Path) -> bytes:
    """Creates the vendor root, platform key and certificate where missing; returns the root's raw public key."""
    sim_dir = Path(sim_dir)
    sim_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = ensure_ed25519_key(sim_dir / ROOT_KEY)
    platform = ensure_ed25519_key(sim_dir / PLATFORM_KEY)
    cert_path = sim_dir / CERTIFICATE
    if not cert_path.exists():
        write_private_file(cert_path, canonical_json(certify(root, raw_public(platform), time.time())))
    # An existing certificate must still chain to this root and name this platform key.
    if verify_certificate(_read_certificate(cert_path), raw_public(root)) != raw_public(platform):
        raise ProviderError(f"{CERTIFICATE} certifies another platform key")
    return raw_public(root)


def _read_certificate(path: Path) -> dict:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ProviderError(f"cannot read {path.name}: {type(e).__name__}; run `make prepare`") from None


class SimulatedAttester:
    """SIMULATED attester: signs the canonical JSON of the report body with the platform key.

    Anyone holding the files in `sim_dir` can sign any measurement. This exists so the whole flow
    (evidence, chain to a pinned root, policy, report-data binding) runs without TDX, SEV-SNP or dstack.
    """

    tee_type = "simulated"

    def __init__(self, *, measurement: dict, sim_dir: Path, clock=time.time, debug: bool = False):
        sim_dir = Path(sim_dir)
        try:
            self._key = load_private_key(sim_dir / PLATFORM_KEY)  # never created here: that is the release step's job
        except KeyFileError as e:
            raise ProviderError(e.detail) from None
        self._certificate = _read_certificate(sim_dir / CERTIFICATE)
        self._measurement = measurement
        self._clock = clock
        self._debug = debug

    def evidence(self, report_data: bytes) -> dict:
        body = make_body(self.tee_type, self._measurement, report_data, self._clock(), self._debug)
        signature = self._key.sign(canonical_json(body))
        return {**body, "platform_certificate": self._certificate, "signature": signature.hex()}
