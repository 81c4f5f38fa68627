"""Intel TDX quote appraisal with dcap-qvl: offline, with stored collateral and an explicit time."""
from typing import Mapping

import dcap_qvl

from attestation.errors import AttestationError
from attestation.policy import RTMR_NAMES, TCB_STATUSES, default_tdx

TD_DEBUG_BIT = 0x01  # TDATTRIBUTES byte 0, bit 0: the TD runs in debug mode (host can read its memory)
MAX_QUOTE_BYTES = 64 * 1024
# dcap-qvl's messages for collateral outside its window (TCB info, QE identity, CRLs, certificates).
COLLATERAL_TIME_WORDS = ("expired", "in the future", "not yet valid")


class QuoteError(AttestationError):
    """A quote or its collateral could not be read or parsed."""

    def __init__(self, detail: str):
        super().__init__("quote", detail)


def decode_quote(data: bytes) -> bytes:
    """A quote file's bytes, whether binary or hex text (with or without 0x)."""
    text = data.strip()
    if text[:2].lower() == b"0x":
        text = text[2:]
    try:
        raw = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raw = data  # not hex text: a binary quote
    if len(raw) > MAX_QUOTE_BYTES:
        raise QuoteError(f"quote is {len(raw)} bytes, more than {MAX_QUOTE_BYTES}")
    return raw


def parse_measurements(raw_quote: bytes) -> dict:
    """MRTD, RTMR0-3, report_data and TD attributes of a TDX quote. Unverified: appraise before trusting."""
    try:
        quote = dcap_qvl.parse_quote(bytes(raw_quote))
    except (ValueError, TypeError) as e:
        raise QuoteError(f"not a parseable quote: {str(e).splitlines()[0][:200]}") from None
    if not quote.is_tdx():
        raise QuoteError("quote is not a TDX quote")
    r = quote.report
    attributes = r.td_attributes
    return {
        "mrtd": r.mr_td.hex(), "rtmr0": r.rt_mr0.hex(), "rtmr1": r.rt_mr1.hex(), "rtmr2": r.rt_mr2.hex(),
        "rtmr3": r.rt_mr3.hex(), "report_data": r.report_data.hex(), "td_attributes": attributes.hex(),
        "debug": bool(attributes[0] & TD_DEBUG_BIT),
    }


def tcb_status_ok(status: str, floor: str = "UpToDate") -> bool:
    """True when `status` is at least as good as `floor`. Revoked and unknown statuses never pass."""
    if status not in TCB_STATUSES or floor not in TCB_STATUSES or status == "Revoked":
        return False
    return TCB_STATUSES.index(status) <= TCB_STATUSES.index(floor)


# dcap-qvl checks the chain to Intel's root, the CRLs and the collateral's validity window and reports a
# TCB status; it does not reject weaker statuses, so the floor is enforced in verify_quote.
def _run_dcap(raw_quote: bytes, collateral_json: str, now: int) -> tuple[dict, str | None]:
    """-> (report facts, None) or ({}, the name of the failed check and its detail)."""
    try:
        collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    except (ValueError, TypeError) as e:
        return {}, ("collateral", f"unreadable collateral: {str(e)[:200]}")
    try:
        report = dcap_qvl.verify(bytes(raw_quote), collateral, int(now))
    except (ValueError, TypeError) as e:
        message = str(e).splitlines()[0][:300]
        name = "collateral" if any(w in message.lower() for w in COLLATERAL_TIME_WORDS) else "signature"
        return {}, (name, message)
    return {"status": report.status, "advisory_ids": list(report.advisory_ids)}, None


def _check(checks: list, name: str, ok: bool, detail: str) -> None:
    checks.append({"name": name, "ok": bool(ok), "detail": detail})


def _policy_checks(checks: list, m: dict, tdx: Mapping, expected_report_data: bytes | None) -> None:
    allowed_mrtd = list(tdx["allowed_mrtd"])
    _check(checks, "mrtd", not allowed_mrtd or m["mrtd"] in allowed_mrtd,
           "policy pins no MRTD" if not allowed_mrtd else f"MRTD {m['mrtd'][:16]}... in the allow-list: "
           f"{m['mrtd'] in allowed_mrtd}")
    pinned = {k: list(v) for k, v in tdx["allowed_rtmrs"].items() if k in RTMR_NAMES}
    bad = [k for k, values in sorted(pinned.items()) if m[k] not in values]
    _check(checks, "rtmrs", not bad, f"not in the allow-list: {bad}" if bad else f"pinned and matching: {sorted(pinned)}")
    _check(checks, "debug", not m["debug"], "TD is in debug mode" if m["debug"] else "TD is not in debug mode")
    if expected_report_data is None:
        _check(checks, "report_data", True, "no expected report_data given")
    else:
        match = m["report_data"] == bytes(expected_report_data).hex()
        _check(checks, "report_data", match, "matches the expected binding" if match else "differs from the expected binding")


def verify_quote(raw_quote: bytes, collateral_json: str, *, now: int, tdx_policy: Mapping | None = None,
                 expected_report_data: bytes | None = None) -> dict:
    """Appraises a TDX quote at time `now`; every check is evaluated and reported, and any failure fails it."""
    tdx = default_tdx() if tdx_policy is None else tdx_policy
    checks: list = []
    try:
        m = parse_measurements(raw_quote)
        _check(checks, "parse", True, "TDX quote parsed")
    except QuoteError as e:
        m = None
        _check(checks, "parse", False, e.detail)
    facts, failure = _run_dcap(raw_quote, collateral_json, now) if m else ({}, ("signature", "quote did not parse"))
    _check(checks, "collateral", failure is None or failure[0] != "collateral",
           failure[1] if failure and failure[0] == "collateral" else "collateral valid at the given time")
    _check(checks, "signature", failure is None,
           "chain to Intel's root and quote signature verified" if failure is None else failure[1])
    status, advisories = facts.get("status", "unverified"), facts.get("advisory_ids", [])
    _check(checks, "tcb_status", failure is None and tcb_status_ok(status, tdx["min_tcb_status"]),
           f"TCB status {status}, floor {tdx['min_tcb_status']}")
    rejected = sorted(set(advisories) & set(tdx["rejected_advisory_ids"]))
    _check(checks, "advisories", not rejected, f"rejected advisories present: {rejected}" if rejected else f"advisories: {advisories}")
    if m:
        _policy_checks(checks, m, tdx, expected_report_data)
    else:
        for name in ("mrtd", "rtmrs", "debug", "report_data"):
            _check(checks, name, False, "quote did not parse")
    failed = next((c["name"] for c in checks if not c["ok"]), None)
    return {"ok": failed is None, "tee_type": "tdx", "at": int(now), "tcb_status": status,
            "advisory_ids": advisories, "measurements": m, "checks": checks, "failed": failed}
