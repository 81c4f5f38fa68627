"""Intel TDX and AMD SEV-SNP evidence through Linux configfs-tsm (Documentation/ABI/testing/configfs-tsm-report)."""
import os
import secrets
import time
from pathlib import Path

from attestation.errors import ProviderError
from attestation.evidence import hardware_report_data, make_body
from attestation.providers.quote_binding import bound_measurements

KERNEL_PROVIDERS = {"tdx": "tdx_guest", "sev-snp": "sev_guest"}
EVIDENCE_FIELD = {"tdx": "quote", "sev-snp": "report"}
MAX_OUTBLOB = 1 << 20  # a TDX quote with its PCK chain is ~5 KB, an SNP report 1.2 KB; 1 MiB is generous
MAX_ATTRIBUTE = 64


class ConfigfsTsmAttester:
    """Asks the guest kernel for a quote (TDX) or report (SEV-SNP) over the role's bound report data."""

    # configfs creates an entry's attribute files on mkdir and drops them on rmdir; a test kernel overrides these.
    _mkdir = staticmethod(os.mkdir)
    _rmdir = staticmethod(os.rmdir)

    def __init__(self, tee_type: str, *, measurement: dict, root: Path, clock=time.time):
        if tee_type not in KERNEL_PROVIDERS:
            raise ProviderError(f"configfs-tsm serves {list(KERNEL_PROVIDERS)}, not {tee_type!r}")
        self.tee_type = tee_type
        self._measurement = measurement
        self._root = Path(root)
        self._clock = clock

    def evidence(self, report_data: bytes) -> dict:
        m = self._measurement
        inblob = hardware_report_data(report_data, m["role"], m["measurement"])
        body = make_body(self.tee_type, m, report_data, self._clock(), debug=False)
        outblob = self._report(inblob)
        if self.tee_type == "tdx":
            bound_measurements(outblob, inblob, "the kernel")
        return {**body, EVIDENCE_FIELD[self.tee_type]: outblob.hex()}

    def _report(self, inblob: bytes) -> bytes:
        entry = self._root / f"twintee-{secrets.token_hex(8)}"
        try:
            self._mkdir(entry)
        except OSError as e:
            raise ProviderError(f"cannot create {entry} ({e.strerror}); is configfs-tsm mounted (Linux >= 6.7)?") from None
        try:
            return self._exchange(entry, inblob)
        finally:
            try:
                self._rmdir(entry)
            except OSError:
                pass  # a leftover entry holds no secret; the next request uses a fresh name

    def _exchange(self, entry: Path, inblob: bytes) -> bytes:
        provider = _read(entry / "provider", MAX_ATTRIBUTE).decode(errors="replace").strip()
        if provider != KERNEL_PROVIDERS[self.tee_type]:
            raise ProviderError(f"configfs-tsm provider is {provider!r}, expected {KERNEL_PROVIDERS[self.tee_type]!r}")
        try:
            (entry / "inblob").write_bytes(inblob)
        except OSError as e:
            raise ProviderError(f"cannot write inblob: {e.strerror}") from None
        written = _read(entry / "generation", MAX_ATTRIBUTE).strip()
        outblob = _read(entry / "outblob", MAX_OUTBLOB)
        # Another writer between our write and read would make outblob answer someone else's inblob.
        if _read(entry / "generation", MAX_ATTRIBUTE).strip() != written:
            raise ProviderError("configfs-tsm generation moved between inblob write and outblob read")
        if not outblob:
            raise ProviderError("configfs-tsm returned an empty outblob")
        return outblob


def _read(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ProviderError(f"cannot read {path.name}: {e.strerror}") from None
    if len(data) > limit:
        raise ProviderError(f"{path.name} is larger than {limit} bytes")
    return data
