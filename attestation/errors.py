"""Named failures of attestation: every refusal says which check failed."""


class AttestationError(Exception):
    """Evidence was refused. `check` names the failed check (e.g. "signature", "measurement")."""

    def __init__(self, check: str, detail: str):
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


class EvidenceError(AttestationError):
    """Evidence is malformed: a missing, extra or ill-typed field. Always fails closed."""

    def __init__(self, detail: str):
        super().__init__("shape", detail)


class PolicyError(AttestationError):
    """The signed policy (reference values) is unsigned, forged or malformed."""

    def __init__(self, detail: str):
        super().__init__("policy", detail)


class ProviderError(AttestationError):
    """The TEE platform (kernel configfs, dstack agent, simulated platform files) failed or misbehaved."""

    def __init__(self, detail: str):
        super().__init__("provider", detail)


class MeasureError(AttestationError):
    """The checkout or model manifest cannot be measured (missing folders or files)."""

    def __init__(self, detail: str):
        super().__init__("measure", detail)
