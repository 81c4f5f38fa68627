"""The key broker's configuration: one frozen, validated dataclass, read from the environment once."""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from attestation.service import ConfigError

PREFIX = "TWINTEE_BROKER_"


@dataclass(frozen=True)
class BrokerConfig:
    audit_log: Path
    data_dir: Path                     # holds model/manifest.json, the release the broker serves
    release_public_key: Path           # the model owner's Ed25519 key that signs manifests
    master_key_file: Path | None = None
    # Exactly one of master_key_file / master_key_hex; the value never appears in repr.
    master_key_hex: str | None = field(default=None, repr=False)
    policy_path: Path | None = None    # read by the entry point to build the appraiser
    host: str = "127.0.0.1"
    port: int = 8700
    nonce_ttl_seconds: float = 60.0    # long enough for one quote (~1 s), short enough to limit replay
    max_nonces: int = 10_000           # bounds memory under a flood of /nonce
    max_request_bytes: int = 1 << 20   # a TDX quote plus event log is tens of KB

    def __post_init__(self):
        for name in ("audit_log", "data_dir", "release_public_key", "master_key_file",
                     "policy_path"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if (self.master_key_file is None) == (self.master_key_hex is None):
            raise ConfigError("set exactly one of master_key_file and master_key_hex")
        if not self.host:
            raise ConfigError("host must not be empty")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is out of range")
        if not 0 < self.nonce_ttl_seconds <= 600:
            raise ConfigError("nonce_ttl_seconds must be in (0, 600]")
        if self.max_nonces < 1 or self.max_request_bytes < 1024:
            raise ConfigError("max_nonces must be >= 1 and max_request_bytes >= 1024")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "BrokerConfig":
        """Build from TWINTEE_BROKER_* variables; the only place the broker reads the environment."""
        env = os.environ if environ is None else environ

        def get(name: str, default=None):
            return env.get(PREFIX + name) or default

        def required(name: str) -> str:
            value = get(name)
            if value is None:
                raise ConfigError(f"{PREFIX}{name} is not set")
            return value

        def number(name: str, kind, default):
            try:
                return kind(get(name, default))
            except ValueError:
                raise ConfigError(f"{PREFIX}{name} must be a number") from None

        return cls(
            audit_log=required("AUDIT_LOG"), data_dir=required("DATA_DIR"),
            release_public_key=required("RELEASE_PUBLIC_KEY"),
            master_key_file=get("MASTER_KEY_FILE"), master_key_hex=get("MASTER_KEY"),
            policy_path=get("POLICY"), host=get("HOST", "127.0.0.1"),
            port=number("PORT", int, 8700),
            nonce_ttl_seconds=number("NONCE_TTL", float, 60.0),
            max_nonces=number("MAX_NONCES", int, 10_000),
            max_request_bytes=number("MAX_REQUEST_BYTES", int, 1 << 20),
        )
