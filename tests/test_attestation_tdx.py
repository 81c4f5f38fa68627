"""Tests for TDX quote appraisal against the real samples from Phala-Network/dcap-qvl (explicit times only)."""
from pathlib import Path

import pytest

import attestation.tdx as tdx
from attestation.policy import default_tdx
from attestation.tdx import decode_quote, parse_measurements, tcb_status_ok, verify_quote

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "tee-samples"
pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"TEE samples folder {SAMPLES} is absent")
INSIDE = 1_751_000_000  # 2025-06-27, inside the collateral's issueDate..nextUpdate
AFTER = 1_760_000_000  # after nextUpdate (2025-07-19)
BEFORE = 1_750_000_000  # before issueDate (2025-06-19)
SAMPLE_MRTD = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
TD_REPORT = 48  # the TD report follows the 48-byte quote header
TD_ATTRIBUTES = TD_REPORT + 120


@pytest.fixture(scope="module")
def quote():
    return (SAMPLES / "tdx_quote").read_bytes()


@pytest.fixture(scope="module")
def collateral():
    return (SAMPLES / "tdx_quote_collateral.json").read_text()


def _check(verdict, name):
    return next(c for c in verdict["checks"] if c["name"] == name)


def test_sample_inside_window_is_up_to_date(quote, collateral):
    verdict = verify_quote(quote, collateral, now=INSIDE)
    assert verdict["ok"] and verdict["failed"] is None
    assert verdict["tcb_status"] == "UpToDate" and verdict["advisory_ids"] == []
    m = verdict["measurements"]
    assert m["mrtd"] == SAMPLE_MRTD and m["debug"] is False
    assert all(len(bytes.fromhex(m[k])) == 48 for k in ("rtmr0", "rtmr1", "rtmr2", "rtmr3"))
    assert len(bytes.fromhex(m["report_data"])) == 64


@pytest.mark.parametrize("at", [AFTER, BEFORE])
def test_sample_outside_window_fails_on_collateral(quote, collateral, at):
    verdict = verify_quote(quote, collateral, now=at)
    assert not verdict["ok"] and verdict["failed"] == "collateral"
    assert not _check(verdict, "tcb_status")["ok"]  # no verified status, so no status passes


def test_tampered_td_report_fails_signature(quote, collateral):
    tampered = bytearray(quote)
    tampered[TD_REPORT + 100] ^= 0x01
    verdict = verify_quote(bytes(tampered), collateral, now=INSIDE)
    assert not verdict["ok"] and verdict["failed"] == "signature"


def test_truncated_quote_fails_parse(quote, collateral):
    verdict = verify_quote(quote[:100], collateral, now=INSIDE)
    assert not verdict["ok"] and verdict["failed"] == "parse"
    assert all(not c["ok"] for c in verdict["checks"] if c["name"] in ("mrtd", "debug", "report_data"))


def test_unreadable_collateral(quote):
    verdict = verify_quote(quote, "{not json", now=INSIDE)
    assert not verdict["ok"] and verdict["failed"] == "collateral"


def test_debug_bit_is_read_and_refused(quote, collateral):
    debug = bytearray(quote)
    debug[TD_ATTRIBUTES] |= tdx.TD_DEBUG_BIT
    assert parse_measurements(bytes(debug))["debug"] is True
    assert not _check(verify_quote(bytes(debug), collateral, now=INSIDE), "debug")["ok"]


@pytest.mark.parametrize("status, floor, ok", [
    ("UpToDate", "UpToDate", True),
    ("SWHardeningNeeded", "UpToDate", False),
    ("ConfigurationNeeded", "UpToDate", False),
    ("OutOfDate", "UpToDate", False),
    ("SWHardeningNeeded", "SWHardeningNeeded", True),
    ("OutOfDate", "SWHardeningNeeded", False),
    ("SWHardeningNeeded", "OutOfDate", True),
    ("Revoked", "OutOfDateConfigurationNeeded", False),
    ("Revoked", "Revoked", False),
    ("SomethingNew", "OutOfDate", False),
])
def test_tcb_status_ranking(status, floor, ok):
    assert tcb_status_ok(status, floor) is ok


class _Report:
    def __init__(self, status, advisories=()):
        self.status, self.advisory_ids = status, list(advisories)


def test_weaker_status_that_dcap_qvl_accepts_is_rejected(quote, collateral, monkeypatch):
    """dcap-qvl returns OutOfDate without raising; the policy floor must refuse it."""
    monkeypatch.setattr(tdx.dcap_qvl, "verify", lambda q, c, now: _Report("OutOfDate", ["INTEL-SA-00837"]))
    verdict = verify_quote(quote, collateral, now=INSIDE)
    assert verdict["failed"] == "tcb_status" and verdict["advisory_ids"] == ["INTEL-SA-00837"]
    relaxed = {**default_tdx(), "min_tcb_status": "OutOfDate"}
    assert verify_quote(quote, collateral, now=INSIDE, tdx_policy=relaxed)["ok"]
    banned = {**relaxed, "rejected_advisory_ids": ["INTEL-SA-00837"]}
    assert verify_quote(quote, collateral, now=INSIDE, tdx_policy=banned)["failed"] == "advisories"


def test_mrtd_and_rtmr_allow_lists(quote, collateral):
    pinned = {**default_tdx(), "allowed_mrtd": [SAMPLE_MRTD]}
    assert verify_quote(quote, collateral, now=INSIDE, tdx_policy=pinned)["ok"]
    other = {**default_tdx(), "allowed_mrtd": ["00" * 48]}
    assert verify_quote(quote, collateral, now=INSIDE, tdx_policy=other)["failed"] == "mrtd"
    rtmr = {**default_tdx(), "allowed_rtmrs": {"rtmr3": ["11" * 48]}}
    assert verify_quote(quote, collateral, now=INSIDE, tdx_policy=rtmr)["failed"] == "rtmrs"


def test_report_data_binding(quote, collateral):
    actual = bytes.fromhex(parse_measurements(quote)["report_data"])
    assert verify_quote(quote, collateral, now=INSIDE, expected_report_data=actual)["ok"]
    verdict = verify_quote(quote, collateral, now=INSIDE, expected_report_data=bytes(64))
    assert verdict["failed"] == "report_data"


def test_dstack_sample_parses_from_hex():
    text = (SAMPLES / "quote-from-tappd.hex").read_bytes()  # hex text (SOURCE.md says 0x-prefixed; it is not)
    raw = decode_quote(text)
    assert decode_quote(raw) == raw and decode_quote(b"0x" + raw.hex().encode() + b"\n") == raw
    m = parse_measurements(raw)
    assert m["rtmr3"] == ("a2d25bc888a93009af5b70eadb410e9071d18387e4db39aae20fe767f5c4279d"
                          "95e6519c5d797938a90694599c5bea7a")
    assert m["report_data"].startswith("7668c6b4eafb6230") and len(bytes.fromhex(m["report_data"])) == 64
    assert m["debug"] is False
