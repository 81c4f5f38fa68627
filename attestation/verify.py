"""The verifier (RATS): appraises evidence against the signed policy (nonces: attestation/nonces.py)."""
import hmac
import time
from typing import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.errors import AttestationError, EvidenceError, ProviderError
from attestation.canonical import canonical_json, hex_field
from attestation.evidence import REPORT_DATA_BYTES, body_of, hardware_report_data, hex_bytes, validate
from attestation.measure import combine, differing_components
from attestation.policy import Policy
from attestation.providers.dstack import event_log_matches, parse_event_log
from attestation.providers.simulated import verify_certificate
from attestation.tdx import verify_quote

MAX_CLOCK_SKEW_S = 30.0  # hosts' clocks drift a little; evidence "from the future" beyond this is refused
REBLESS_HINT = "run `make prepare` to re-bless"


class Verifier:
    """Appraises one piece of evidence; `collateral(quote) -> JSON` supplies stored Intel collateral for TDX quotes."""

    def __init__(self, policy: Policy, *, clock=time.time, collateral: Callable[[bytes], str] | None = None):
        self.policy = policy
        self._clock = clock
        self._collateral = collateral

    def appraise(self, evidence, expected_role: str, expected_report_data: bytes) -> dict:
        """`check`, then raise AttestationError naming the first failed check."""
        verdict = self.check(evidence, expected_role, expected_report_data)
        if not verdict["ok"]:
            detail = next(c["detail"] for c in verdict["checks"] if c["name"] == verdict["failed"])
            raise AttestationError(verdict["failed"], detail)
        return verdict

    def check(self, evidence, expected_role: str, expected_report_data: bytes) -> dict:
        """Evaluates every check and returns the verdict; any malformed input fails closed."""
        now = self._clock()
        checks = []
        try:
            validate(evidence)
        except EvidenceError as e:
            checks.append(_c("shape", False, e.detail))
            return _verdict(evidence if isinstance(evidence, dict) else {}, checks, None, None)
        checks.append(_c("shape", True, "well-formed evidence envelope"))
        allowed = evidence["tee_type"] in self.policy.allowed_tee_types
        checks.append(_c("tee_type", allowed, f"{evidence['tee_type']} is {'' if allowed else 'not '}allowed by the policy"))
        platform = self._platform_checks(evidence, expected_report_data, now, checks)
        checks.append(self._role(evidence, expected_role))
        checks.append(self._measurement(evidence))
        age = now - evidence["issued_at"]
        checks.append(self._freshness(age))
        checks.append(_c("debug", not evidence["debug"], "debug build" if evidence["debug"] else "not a debug build"))
        match = hmac.compare_digest(hex_bytes(evidence["report_data"], REPORT_DATA_BYTES, "report_data"),
                                    bytes(expected_report_data))
        checks.append(_c("report_data", match, "bound to this key and nonce" if match else "not bound to this key and nonce"))
        return _verdict(evidence, checks, age, platform)

    def _platform_checks(self, ev: dict, expected_report_data: bytes, now: float, checks: list) -> dict | None:
        if ev["tee_type"] == "simulated":
            checks.append(self._simulated_signature(ev))
            return None
        if ev["tee_type"] == "sev-snp":
            checks.append(_c("signature", False, "SEV-SNP report verification is not available in this build; refusing"))
            return None
        return self._tdx_checks(ev, expected_report_data, now, checks)

    def _simulated_signature(self, ev: dict) -> dict:
        try:
            root = hex_field(self.policy.simulated_root_public_key, 32) or b""  # "": no simulated root blessed
            platform = verify_certificate(ev["platform_certificate"], root)
            signature = hex_bytes(ev["signature"], 64, "signature")
            Ed25519PublicKey.from_public_bytes(platform).verify(signature, canonical_json(body_of(ev)))
        except (ProviderError, EvidenceError) as e:
            return _c("signature", False, e.detail)
        except (ValueError, InvalidSignature):
            return _c("signature", False, "report signature does not verify with the certified platform key")
        return _c("signature", True, "SIMULATED platform key certified by the pinned simulated root")

    def _tdx_checks(self, ev: dict, expected_report_data: bytes, now: float, checks: list) -> dict | None:
        """TDX and dstack: dcap-qvl appraisal, the event log (dstack), platform pins, debug bit, quote binding."""
        try:
            quote = hex_bytes(ev["quote"], None, "quote")
            collateral = self._collateral(quote) if self._collateral else None
        except (AttestationError, OSError, ValueError, KeyError) as e:
            checks.append(_c("signature", False, f"no usable quote or collateral: {type(e).__name__}"))
            return None
        if collateral is None:
            checks.append(_c("signature", False, "no stored collateral for TDX quotes; refusing"))
            return None
        bound = hardware_report_data(expected_report_data, ev["role"], ev["measurement"])
        tdx = verify_quote(quote, collateral, now=int(now), tdx_policy=self.policy.tdx, expected_report_data=bound)
        by = {c["name"]: c for c in tdx["checks"]}
        checks.append(_merge("signature", [by[n] for n in ("parse", "collateral", "signature")]))
        checks.append(_merge("tcb_status", [by["tcb_status"], by["advisories"]]))
        if ev["tee_type"] == "dstack":
            checks.append(_event_log_check(ev, tdx["measurements"]))
        checks.append(self._platform_measurement(by))
        checks.append(_merge("platform_debug", [by["debug"]]))
        checks.append(_merge("quote_binding", [by["report_data"]]))
        return {k: tdx[k] for k in ("tcb_status", "advisory_ids", "measurements", "at")}

    def _platform_measurement(self, by: dict) -> dict:
        tdx = self.policy.tdx
        if not tdx["allowed_mrtd"] and not tdx["allowed_rtmrs"]:
            # Without a pinned MRTD or RTMR any TD could claim our app measurement.
            return _c("platform_measurement", False, "policy pins no MRTD or RTMR for hardware evidence")
        return _merge("platform_measurement", [by["mrtd"], by["rtmrs"]])

    def _role(self, ev: dict, expected_role: str) -> dict:
        if ev["role"] != expected_role:
            return _c("role", False, f"evidence is for {ev['role']}, expected {expected_role}")
        if ev["role"] not in self.policy.roles:
            return _c("role", False, f"policy has no reference values for {ev['role']}")
        return _c("role", True, f"role {ev['role']}")

    def _measurement(self, ev: dict) -> dict:
        ref = self.policy.roles.get(ev["role"])
        if ref is None:
            return _c("measurement", False, f"no reference measurement for {ev['role']}")
        if combine(ev["components"]) != ev["measurement"]:
            return _c("measurement", False, "measurement does not match its own components")
        differing = differing_components(ref["components"], ev["components"])
        if differing or ev["measurement"] != ref["measurement"]:
            return _c("measurement", False, f"{ev['role']} differs from the blessed reference in: "
                      f"{', '.join(differing) or 'measurement'}; {REBLESS_HINT}")
        return _c("measurement", True, "matches the blessed reference")

    def _freshness(self, age: float) -> dict:
        limit = self.policy.max_evidence_age_s
        ok = -MAX_CLOCK_SKEW_S <= age <= limit
        return _c("freshness", ok, f"evidence age {age:.1f}s, limit {limit:g}s")


def _c(name: str, ok: bool, detail: str) -> dict:
    return {"name": name, "ok": bool(ok), "detail": detail}


def _merge(name: str, parts: list[dict]) -> dict:
    bad = [p for p in parts if not p["ok"]]
    return _c(name, not bad, "; ".join(p["detail"] for p in (bad or parts)))


def _event_log_check(ev: dict, measurements: dict | None) -> dict:
    try:
        events = parse_event_log(ev["event_log"])
    except EvidenceError as e:
        return _c("event_log", False, e.detail)
    if measurements is None or not event_log_matches(events, measurements["rtmr3"]):
        return _c("event_log", False, "event log does not replay to the quoted RTMR3")
    return _c("event_log", True, f"{len(events)} events replay to the quoted RTMR3")


def _verdict(ev: dict, checks: list, age: float | None, platform: dict | None) -> dict:
    failed = next((c["name"] for c in checks if not c["ok"]), None)
    verdict = {
        "ok": failed is None and bool(checks), "tee_type": ev.get("tee_type"), "role": ev.get("role"),
        "measurement": ev.get("measurement"), "age_s": age, "checks": checks, "failed": failed,
    }
    if platform is not None:
        verdict["platform"] = platform
    return verdict
