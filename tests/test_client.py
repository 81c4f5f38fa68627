"""`python -m client chat`: verifies both nodes, seals the prompt, streams the reply; refuses tampered evidence.

The slow tests run the real CLI against real processes, with a host in the middle (`tests.proxy.HostProxy`) in front of
node1 that records every byte and can rewrite what node1 answers.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from attestation.errors import PolicyError
from attestation.policy import sign_policy
from client.attest import VerificationFailed, attest, pinned_policy, require_verified
from shared.identity import raw_public
from tests.e2e import own_ports, start_stack
from tests.proxy import HostProxy

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "What is the capital of France?"
SECRET = "the launch code is 5512-alpha"
MAX_TOKENS = 24


def _edit_attestation(edit):
    def rewrite(path: str, body: bytes) -> bytes:
        if path != "attestation":
            return body
        doc = json.loads(body)  # floats round-trip exactly, so untouched signatures stay valid
        edit(doc)
        return json.dumps(doc).encode()
    return rewrite


def swap_node1_key(doc):
    """The attack that matters: the host offers its own key so that prompts are sealed to it."""
    doc["node1"]["public_key"] = raw_public(X25519PrivateKey.generate()).hex()


def alter_node2_measurement(doc):
    doc["node2"]["evidence"]["measurement"] = "00" * 32


def forge_policy(path: str, body: bytes) -> bytes:
    if path != "policy":
        return body
    doc = json.loads(body)
    doc["body"]["max_evidence_age_s"] = 86400.0
    forger = Ed25519PrivateKey.generate()
    doc["signature"] = forger.sign(json.dumps(doc["body"], sort_keys=True, separators=(",", ":")).encode()).hex()
    doc["public_key"] = forger.public_key().public_bytes_raw().hex()
    return json.dumps(doc).encode()


TAMPERS = {  # name -> (rewrite, the check that must name it)
    "node1 key swapped": (_edit_attestation(swap_node1_key), "node1: report_data"),
    "node2 measurement altered": (_edit_attestation(alter_node2_measurement), "node2: signature"),
    "policy re-signed by another key": (forge_policy, "policy"),
}


def run_client(url: str, release_dir: Path, *extra: str, stdin: str | None = None,
               key: str = "") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "client", "chat", "--url", url, "--release-dir", str(release_dir),
           "--max-tokens", str(MAX_TOKENS), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TWINTEE_API_KEY": key}
    return subprocess.run(cmd, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=300)


def replies(stdout: str) -> list[str]:
    return [line.removeprefix("assistant> ") for line in stdout.splitlines() if line.startswith("assistant> ")]


def greedy(stack, prompt: str) -> str:
    body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}
    return requests.post(stack.url("node1") + "/generate", headers=stack.auth, json=body, timeout=300).json()["text"]


# ---- fast: the client's appraisal on a simulated release, no processes -----------------------------------


class SimulatedRelease:
    """A release directory (pinned key, signed policy) and attesters for both nodes, without a model."""

    def __init__(self, tmp: Path):
        from attestation.measure import measure_node
        from attestation.policy import Policy, default_tdx
        from attestation.providers.simulated import SimulatedAttester, init_simulated_platform

        self.dir, sim = tmp, tmp / "simulated-tee"
        root = init_simulated_platform(sim)
        self.release_key = Ed25519PrivateKey.generate()
        self.measurements = {r: measure_node(ROOT, r, "ab" * 32, {"role": r}) for r in ("node1", "node2")}
        self.policy = Policy(version=1, created_at=1_700_000_000.25, allowed_tee_types=("simulated", "tdx"),
                             roles={r: {k: m[k] for k in ("measurement", "components")} for r, m in self.measurements.items()},
                             simulated_root_public_key=root.hex(), max_evidence_age_s=300.0, tdx=default_tdx(),
                             model={"model_id": "org/tiny-é", "version": 2}, min_model_version=2)
        self.signed_policy = sign_policy(self.policy, self.release_key)
        (tmp / "keys").mkdir(exist_ok=True)
        (tmp / "keys" / "release.pub").write_bytes(self.release_key.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        (tmp / "policy.json").write_text(json.dumps(self.signed_policy, indent=1))
        self.keys = {r: X25519PrivateKey.generate() for r in self.measurements}
        self.attesters = {r: SimulatedAttester(measurement=m, sim_dir=sim) for r, m in self.measurements.items()}

    def node(self, role: str, nonce: bytes, attester=None) -> dict:
        """What node1's /attestation relays for `role`."""
        from attestation.binding import CLIENT_ATTESTATION, report_data
        key = raw_public(self.keys[role])
        ev = (attester or self.attesters[role]).evidence(report_data(key, nonce, purpose=CLIENT_ATTESTATION))
        return {"role": role, "public_key": key.hex(), "nonce": nonce.hex(), "measurement": self.measurements[role],
                "evidence": ev, "model": {"model_id": "org/tiny-é", "version": 2, "layers": [0, 2]}}

    def attestation(self, nonce: bytes) -> dict:
        return {"node1": self.node("node1", nonce), "node2": self.node("node2", nonce),
                "node1_verdict_on_node2": {"ok": True}}


class FakeHttp:
    """Answers /attestation for whatever nonce the client picked, through an optional edit."""

    def __init__(self, release: SimulatedRelease, edit=None):
        self.release, self.edit = release, edit

    def get(self, url, params=None, timeout=None):
        doc = self.release.attestation(bytes.fromhex(params["nonce"]))
        if self.edit:
            self.edit(doc)
        return SimpleNamespace(status_code=200, content=json.dumps(doc).encode())


@pytest.fixture()
def sim_release(tmp_path):
    return SimulatedRelease(tmp_path)


def test_genuine_evidence_passes_every_check(sim_release):
    pinned = pinned_policy(sim_release.dir, None, "http://unused")
    reports = attest(FakeHttp(sim_release), "http://node1", pinned)
    assert reports["node1"].ok and reports["node2"].ok
    assert require_verified(reports) == raw_public(sim_release.keys["node1"])
    names = [c["name"] for c in reports["node1"].verdict["checks"]]
    assert {"signature", "measurement", "freshness", "report_data", "model"} <= set(names)


@pytest.mark.parametrize("edit, role, check", [
    (swap_node1_key, "node1", "report_data"),
    (alter_node2_measurement, "node2", "signature"),
    (lambda d: d["node2"].update(nonce="00" * 32, evidence=d["node1"]["evidence"]), "node2", "role"),
    (lambda d: d["node1"]["model"].update(version=1), "node1", "model"),
    (lambda d: d.update(node2={"error": "node2 unreachable"}), "node2", "reachable"),
])
def test_tampered_evidence_names_the_failed_check(sim_release, edit, role, check):
    pinned = pinned_policy(sim_release.dir, None, "http://unused")
    reports = attest(FakeHttp(sim_release, edit), "http://node1", pinned)
    assert reports[role].verdict["failed"] == check
    with pytest.raises(VerificationFailed, match=f"{role}: {check} failed"):
        require_verified(reports)


def test_a_policy_not_signed_by_the_pinned_key_is_refused(sim_release):
    forged = json.loads(forge_policy("policy", json.dumps(sim_release.signed_policy).encode()))
    (sim_release.dir / "policy.json").write_text(json.dumps(forged))
    with pytest.raises(PolicyError, match="pinned release key"):
        pinned_policy(sim_release.dir, None, "http://unused")


# ---- slow: the real CLI against real processes ---------------------------------------------------------


@pytest.fixture(scope="module")
def stack(release_dir, tmp_path_factory):
    s = start_stack(release_dir, tmp_path_factory.mktemp("client-logs"), **own_ports(21))
    yield s
    s.stop()


@pytest.mark.slow
def test_client_verifies_both_nodes_and_streams_the_greedy_reply(stack, release_dir):
    out = run_client(stack.url("node1"), release_dir, "--prompt", PROMPT, key=stack.api_key)
    assert out.returncode == 0, out.stderr
    assert "node1: VERIFIED" in out.stdout and "node2: VERIFIED" in out.stdout
    assert "[FAIL]" not in out.stdout and "SIMULATED TEE" in out.stdout
    assert replies(out.stdout) == [greedy(stack, PROMPT)]


@pytest.mark.slow
def test_the_host_in_the_middle_sees_only_ciphertext(stack, release_dir):
    with HostProxy(stack.url("node1")) as host:
        out = run_client(host.url, release_dir, "--prompt", SECRET, key=stack.api_key)
        assert out.returncode == 0, out.stderr
        reply = replies(out.stdout)[0]
        assert "v1/sealed/generate" in host.paths() and "generate" not in host.paths()
        captured = bytes(host.captured)
    assert len(reply) > 10
    for text in (SECRET, reply, json.dumps(SECRET)[1:-1], stack.api_key):  # the key travels inside the seal
        assert text.encode() not in captured


@pytest.fixture(scope="module")
def key_only_dir(release_dir, tmp_path_factory) -> Path:
    """Only the pinned release key: the client must fetch node1's /policy and check its signature itself."""
    d = tmp_path_factory.mktemp("key-only")
    (d / "keys").mkdir()
    shutil.copyfile(release_dir / "keys" / "release.pub", d / "keys" / "release.pub")
    return d


@pytest.mark.slow
def test_with_only_the_pinned_key_the_client_checks_the_served_policy(stack, key_only_dir):
    out = run_client(stack.url("node1"), key_only_dir, "--prompt", PROMPT, key=stack.api_key)
    assert out.returncode == 0, out.stderr
    assert "/policy)" in out.stdout and replies(out.stdout) == [greedy(stack, PROMPT)]


@pytest.mark.slow
@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_tampered_evidence_is_refused_before_anything_is_sent(stack, key_only_dir, tamper):
    rewrite, named = TAMPERS[tamper]
    with HostProxy(stack.url("node1")) as host:
        host.rewrite = rewrite
        out = run_client(host.url, key_only_dir, "--prompt", SECRET, key=stack.api_key)
        assert "v1/sealed/generate" not in host.paths()
    assert out.returncode == 2
    assert "refusing to send" in out.stderr and named in out.stderr
    assert SECRET not in out.stdout + out.stderr


@pytest.mark.slow
def test_insecure_plain_skips_the_checks_and_says_so_loudly(stack, release_dir):
    with HostProxy(stack.url("node1")) as host:
        host.rewrite = TAMPERS["node1 key swapped"][0]
        out = run_client(host.url, release_dir, "--insecure-plain", "--prompt", PROMPT, key=stack.api_key)
        assert host.paths() == ["generate"]  # not even an attestation request
    assert out.returncode == 0 and "INSECURE" in out.stderr and "can read your prompts" in out.stderr
    assert replies(out.stdout) == [greedy(stack, PROMPT)]


@pytest.mark.slow
def test_interactive_mode_keeps_the_conversation(stack, release_dir):
    with HostProxy(stack.url("node1")) as host:
        out = run_client(host.url, release_dir, stdin="Name a colour.\n\nName another one.\n", key=stack.api_key)
        sealed = [json.loads(body) for _, path, body in host.requests if path == "v1/sealed/generate"]
    assert out.returncode == 0, out.stderr
    first, second = replies(out.stdout)
    assert len(sealed) == 2 and first
    # The second sealed request carries the first turn too: its ciphertext grows by at least the reply.
    assert len(sealed[1]["ciphertext"]) // 2 > len(sealed[0]["ciphertext"]) // 2 + len(first.encode())
    assert out.stdout.count("node1: VERIFIED") == 1  # verdicts printed once; each turn re-attests quietly
