"""Tests for the verifier, the nonce book, the signed policy and the blessing step."""
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attestation.binding import PEER_HANDSHAKE, report_data
from attestation.errors import AttestationError, PolicyError
from attestation.evidence import make_body
from attestation.measure import measure_node
from attestation.policy import Policy, load_policy, sign_policy
from attestation.providers import make_attester
from attestation.providers.dstack import replay_rtmr
from attestation.providers.simulated import SimulatedAttester, init_simulated_platform
from attestation.release_dir import release_public_key, security_config
from release.bless import bless
from attestation.verify import Verifier

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "tee-samples"
NOW = 1_751_000_000.0
SAMPLE_MRTD = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"TEE samples folder {SAMPLES} is absent")
MANIFEST_BODY = {"model_id": "test/model", "version": 3, "split_layer": 15, "num_layers": 30}


class Release:
    """A blessed tmp project: its policy and a way to get evidence from any role."""

    def __init__(self, tmp_path):
        self.project = tmp_path / "project"
        for rel in ("node1/app.py", "node2/engine.py", "shared/config.py", "attestation/verify.py", "webui/app.js"):
            (self.project / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.project / rel).write_text(f"# {rel}\n")
        self.data = tmp_path / "data"
        (self.data / "model").mkdir(parents=True)
        (self.data / "model" / "manifest.json").write_text(json.dumps({"body": MANIFEST_BODY}))
        self.policy = bless(self.project, self.data)

    def measurement(self, role):
        sha = hashlib.sha256((self.data / "model" / "manifest.json").read_bytes()).hexdigest()
        return measure_node(self.project, role, sha, security_config(role, MANIFEST_BODY))

    def evidence(self, role, rd, *, at=NOW, debug=False, sim_dir=None):
        sim = sim_dir or self.data / "simulated-tee"
        return SimulatedAttester(measurement=self.measurement(role), sim_dir=sim, clock=lambda: at, debug=debug).evidence(rd)


@pytest.fixture
def release(tmp_path):
    return Release(tmp_path)


@pytest.fixture
def rd():
    return report_data(b"k" * 32, b"n" * 32, purpose=PEER_HANDSHAKE)


def verifier(policy, at=NOW + 5, **kw):
    return Verifier(policy, clock=lambda: at, **kw)


def test_genuine_evidence_passes_every_check(release, rd):
    ev = make_attester("simulated", role="node1", measurement=release.measurement("node1"),
                       sim_dir=release.data / "simulated-tee", clock=lambda: NOW).evidence(rd)
    verdict = verifier(release.policy).appraise(json.loads(json.dumps(ev)), "node1", rd)
    assert verdict["ok"] and verdict["failed"] is None and verdict["age_s"] == pytest.approx(5)
    names = [c["name"] for c in verdict["checks"]]
    assert names == ["shape", "tee_type", "signature", "role", "measurement", "freshness", "debug", "report_data"]
    assert all(c["ok"] for c in verdict["checks"])


def _failed(verdict, name):
    assert not verdict["ok"] and verdict["failed"] == name, verdict
    return next(c for c in verdict["checks"] if c["name"] == name)["detail"]


def test_forged_signature(release, rd):
    ev = release.evidence("node1", rd)
    ev["signature"] = ("00" if ev["signature"][:2] != "00" else "11") + ev["signature"][2:]
    _failed(verifier(release.policy).check(ev, "node1", rd), "signature")


def test_body_edited_after_signing(release, rd):
    ev = release.evidence("node1", rd, debug=True)
    ev["debug"] = False
    _failed(verifier(release.policy).check(ev, "node1", rd), "signature")


def test_unknown_root(release, rd, tmp_path):
    init_simulated_platform(tmp_path / "rogue")
    ev = release.evidence("node1", rd, sim_dir=tmp_path / "rogue")
    assert "pinned simulated root" in _failed(verifier(release.policy).check(ev, "node1", rd), "signature")


def test_wrong_role(release, rd):
    ev = release.evidence("node2", rd)
    assert "expected node1" in _failed(verifier(release.policy).check(ev, "node1", rd), "role")


@pytest.mark.parametrize("change, component", [
    (lambda r: (r.project / "node1" / "app.py").write_text("evil = True\n"), "code"),
    (lambda r: (r.data / "model" / "manifest.json").write_text(json.dumps({"body": {**MANIFEST_BODY, "x": 1}})), "manifest"),
])
def test_wrong_measurement_names_the_component(release, rd, change, component):
    change(release)
    detail = _failed(verifier(release.policy).check(release.evidence("node1", rd), "node1", rd), "measurement")
    assert f"in: {component};" in detail and "make prepare" in detail


def test_measurement_must_match_its_components(release, rd):
    ev = release.evidence("node1", rd)
    ev["components"]["config"] = "00" * 32  # hardware evidence does not sign components: never trust their names alone
    verdict = verifier(release.policy).check(ev, "node1", rd)
    check = next(c for c in verdict["checks"] if c["name"] == "measurement")
    assert not check["ok"] and "own components" in check["detail"]


@pytest.mark.parametrize("age", [301.0, -60.0])
def test_stale_or_future_evidence(release, rd, age):
    ev = release.evidence("node1", rd, at=NOW - age)
    _failed(verifier(release.policy, at=NOW).check(ev, "node1", rd), "freshness")


def test_wrong_report_data(release, rd):
    ev = release.evidence("node1", rd)
    other = report_data(b"k" * 32, b"m" * 32, purpose=PEER_HANDSHAKE)
    _failed(verifier(release.policy).check(ev, "node1", other), "report_data")


def test_debug_build_refused(release, rd):
    _failed(verifier(release.policy).check(release.evidence("node1", rd, debug=True), "node1", rd), "debug")


def test_production_policy_rejects_simulated(release, rd):
    production = release.policy.production()
    assert "simulated" not in production.allowed_tee_types
    verdict = verifier(production).check(release.evidence("node1", rd), "node1", rd)
    _failed(verdict, "tee_type")
    assert len(verdict["checks"]) == 8  # the remaining checks are still evaluated and reported


@pytest.mark.parametrize("evidence", [None, [], {}, "evidence", {"tee_type": "simulated"}])
def test_malformed_evidence_fails_closed(release, rd, evidence):
    _failed(verifier(release.policy).check(evidence, "node1", rd), "shape")
    with pytest.raises(AttestationError) as info:
        verifier(release.policy).appraise(evidence, "node1", rd)
    assert info.value.check == "shape"


@pytest.mark.parametrize("field, value", [("signature", "zz"), ("platform_certificate", []), ("prompt", "hi")])
def test_malformed_provider_fields_fail_closed(release, rd, field, value):
    ev = release.evidence("node1", rd)
    ev[field] = value
    assert not verifier(release.policy).check(ev, "node1", rd)["ok"]


def test_appraise_raises_the_failed_check(release, rd):
    with pytest.raises(AttestationError) as info:
        verifier(release.policy).appraise(release.evidence("node2", rd), "node1", rd)
    assert info.value.check == "role"


def test_sev_snp_is_refused_until_it_can_be_verified(release, rd):
    ev = {**make_body("sev-snp", release.measurement("node1"), rd, NOW, debug=False), "report": "00" * 64}
    assert "not available" in _failed(verifier(release.policy).check(ev, "node1", rd), "signature")


@needs_samples
def test_real_tdx_quote_is_appraised_but_not_bound(release, rd):
    """A genuine quote passes the chain and TCB checks, yet it was not made for this challenge."""
    quote = (SAMPLES / "tdx_quote").read_bytes().hex()
    collateral = (SAMPLES / "tdx_quote_collateral.json").read_text()
    ev = {**make_body("tdx", release.measurement("node1"), rd, NOW, debug=False), "quote": quote}
    no_pins = verifier(release.policy, collateral=lambda q: collateral).check(ev, "node1", rd)
    assert _failed(no_pins, "platform_measurement") == "policy pins no MRTD or RTMR for hardware evidence"
    pinned = Policy(**{**release.policy.to_dict(), "tdx": {
        **release.policy.to_dict()["tdx"], "allowed_mrtd": [SAMPLE_MRTD]}})
    verdict = verifier(pinned, collateral=lambda q: collateral).check(ev, "node1", rd)
    ok = {c["name"]: c["ok"] for c in verdict["checks"]}
    assert ok["signature"] and ok["tcb_status"] and ok["platform_measurement"] and ok["platform_debug"]
    assert verdict["failed"] == "quote_binding" and verdict["platform"]["tcb_status"] == "UpToDate"
    _failed(verifier(pinned).check(ev, "node1", rd), "signature")  # no collateral: refuse


@needs_samples
def test_dstack_event_log_must_replay_to_the_quoted_rtmr3(release, rd):
    events = [{"imr": 3, "event_type": 134217729, "digest": "ab" * 48, "event": "compose-hash", "event_payload": "00"}]
    quote = bytearray((SAMPLES / "tdx_quote").read_bytes())
    quote[520:568] = bytes.fromhex(replay_rtmr(events))  # RTMR3 of the TD report (48-byte header + 472)
    collateral = (SAMPLES / "tdx_quote_collateral.json").read_text()
    ev = {**make_body("dstack", release.measurement("node1"), rd, NOW, debug=False),
          "quote": quote.hex(), "event_log": events}
    checks = {c["name"]: c["ok"] for c in verifier(release.policy, collateral=lambda q: collateral).check(ev, "node1", rd)["checks"]}
    assert checks["event_log"] and not checks["signature"]  # the patched quote no longer verifies
    ev["event_log"] = [{**events[0], "digest": "cd" * 48}]
    checks = {c["name"]: c["ok"] for c in verifier(release.policy, collateral=lambda q: collateral).check(ev, "node1", rd)["checks"]}
    assert not checks["event_log"]


def test_bless_writes_keys_and_a_loadable_policy(release):
    key = release.data / "keys" / "release.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    policy = load_policy(release.data / "policy.json", release_public_key(release.data))
    assert policy == release.policy and policy.model["version"] == 3 and policy.min_model_version == 3
    assert set(policy.roles) == {"node1", "node2", "broker"}
    again = bless(release.project, release.data)  # keys and simulated root are kept, not replaced
    assert again.simulated_root_public_key == policy.simulated_root_public_key
    assert load_policy(release.data / "policy.json", release_public_key(release.data)).roles == policy.roles


def test_policy_signature_and_shape_are_checked(release):
    signed = json.loads((release.data / "policy.json").read_text())
    pub = release_public_key(release.data)
    tampered = json.loads(json.dumps(signed))
    tampered["body"]["max_evidence_age_s"] = 86400
    with pytest.raises(PolicyError):
        load_policy(tampered, pub)
    other_key = Ed25519PrivateKey.generate()
    with pytest.raises(PolicyError):
        load_policy(sign_policy(release.policy, other_key), pub)
    bad = sign_policy(release.policy, other_key)
    bad["body"]["allowed_tee_types"] = ["sgx"]
    resigned = {**bad, "signature": other_key.sign(json.dumps(bad["body"], sort_keys=True, separators=(",", ":")).encode()).hex()}
    with pytest.raises(PolicyError):
        load_policy(resigned, bytes.fromhex(bad["public_key"]))
    with pytest.raises(PolicyError):
        load_policy(release.data / "missing.json", pub)


def test_policy_is_frozen(release):
    with pytest.raises(Exception):
        release.policy.roles["node1"] = {}
    with pytest.raises(Exception):
        release.policy.allowed_tee_types = ("tdx",)


def _write_manifest(release, version):
    (release.data / "model" / "manifest.json").write_text(json.dumps({"body": {**MANIFEST_BODY, "version": version}}))


def test_rebless_keeps_floor_pins_and_tee_types(release):
    pinned = bless(release.project, release.data, allowed_tee_types=("tdx",),
                   tdx={**release.policy.to_dict()["tdx"], "allowed_mrtd": [SAMPLE_MRTD]})
    _write_manifest(release, 4)
    again = bless(release.project, release.data)
    assert again.min_model_version == 3 and again.model["version"] == 4  # a new version does not retire the old
    assert again.allowed_tee_types == ("tdx",) and list(again.tdx["allowed_mrtd"]) == [SAMPLE_MRTD]
    assert again.roles["node1"]["components"]["manifest"] != pinned.roles["node1"]["components"]["manifest"]
    assert bless(release.project, release.data, min_model_version=4).min_model_version == 4
    _write_manifest(release, 3)  # a rolled-back manifest re-blessed: the floor stays where it was
    assert bless(release.project, release.data).min_model_version == 4
