"""Attesters (RATS): one per TEE kind, all producing the same evidence envelope; `make_attester` picks one."""
import time
from pathlib import Path
from typing import Protocol

from attestation.errors import ProviderError
from attestation.providers.configfs_tsm import ConfigfsTsmAttester
from attestation.providers.dstack import DstackAttester
from attestation.providers.simulated import SimulatedAttester


class Attester(Protocol):
    tee_type: str

    def evidence(self, report_data: bytes) -> dict: ...


def make_attester(kind: str, *, role: str, measurement: dict, sim_dir: Path | None = None,
                  configfs_root: Path = Path("/sys/kernel/config/tsm/report"),
                  dstack_socket: str = "/var/run/dstack.sock", clock=time.time) -> Attester:
    """The attester for `kind` ("simulated", "tdx", "sev-snp", "dstack") speaking for `role`."""
    if measurement.get("role") != role:
        raise ProviderError(f"measurement is for {measurement.get('role')!r}, not {role!r}")
    if kind == "simulated":
        if sim_dir is None:
            raise ProviderError("the simulated TEE needs sim_dir (data/simulated-tee)")
        return SimulatedAttester(measurement=measurement, sim_dir=sim_dir, clock=clock)
    if kind in ("tdx", "sev-snp"):
        return ConfigfsTsmAttester(kind, measurement=measurement, root=configfs_root, clock=clock)
    if kind == "dstack":
        return DstackAttester(measurement=measurement, socket=dstack_socket, clock=clock)
    raise ProviderError(f"unknown TEE kind {kind!r}; expected simulated, tdx, sev-snp or dstack")
