"""Hostile clients against the real processes (issue 12): an outsider with no credentials relays
node1's public attestation into node2's handshake and the broker's key release while a victim
generates; the victim's tokens must be its reference tokens, and both relays must be refused."""
import json
import os
import re
import threading

import pytest
import requests

from shared.handshake import VERSION
from tests.e2e import start_stack

pytestmark = pytest.mark.slow
VICTIM = {"prompt": "List the planets of the solar system, one per line.", "max_tokens": 64}


@pytest.fixture(scope="module")
def stack(release_dir, tmp_path_factory):
    s = start_stack(release_dir, tmp_path_factory.mktemp("logs"))
    yield s
    s.stop()


def node1_evidence_over(stack, nonce_hex: str) -> dict:
    """What node1's public endpoint gives anyone: its key and evidence over a nonce of their choosing."""
    return requests.get(stack.url("node1") + "/attestation", params={"nonce": nonce_hex}, timeout=10).json()["node1"]


def relay_handshake(stack) -> requests.Response:
    public = node1_evidence_over(stack, "00" * 32)["public_key"]
    m1 = {"version": VERSION, "role": "node1", "nonce": os.urandom(32).hex(), "public_key": public}
    m2 = requests.post(stack.url("node2") + "/v1/handshake/hello", json=m1, timeout=10).json()
    relayed = node1_evidence_over(stack, m2["nonce"])["evidence"]  # node1-made, over node2's own nonce
    m3 = {"handshake_id": m2["handshake_id"], "evidence": relayed, "confirm": "00" * 32}
    return requests.post(stack.url("node2") + "/v1/handshake/finish", json=m3, timeout=10)


def relay_key_request(stack) -> requests.Response:
    nonce = requests.post(stack.url("broker") + "/nonce", timeout=10).json()["nonce"]
    node1 = node1_evidence_over(stack, nonce)
    model = node1["model"]
    return requests.post(stack.url("broker") + "/key", timeout=10, json={
        "role": "node1", "model_id": model["model_id"], "version": model["version"],
        "public_key": node1["public_key"], "nonce": nonce, "evidence": node1["evidence"]})


def test_relayed_evidence_never_completes_a_handshake_nor_stops_a_victim(stack):
    reference = requests.post(stack.url("node1") + "/generate", headers=stack.auth, json=VICTIM, timeout=120).json()["token_ids"]
    channels_before = requests.get(stack.url("node2") + "/health", timeout=10).json()["channels"]
    refused, out = [], {}
    victim = threading.Thread(target=lambda: out.update(
        victim=requests.post(stack.url("node1") + "/generate", headers=stack.auth, json=VICTIM, timeout=120)))
    victim.start()
    while victim.is_alive() or len(refused) < 12:  # more than node2 keeps channels (8)
        refused.append(relay_handshake(stack).status_code)
    victim.join()
    assert set(refused) == {403}, refused
    assert out["victim"].status_code == 200 and out["victim"].json()["token_ids"] == reference
    health = requests.get(stack.url("node2") + "/health", timeout=10).json()
    assert health["channels"] == channels_before
    # Anyone can post a refused finish: node2's verdict on its live node1 stays the verified one.
    assert health["peer"]["verified"] is True, health["peer"]


def junk_key_requests(stack) -> float:
    text = requests.get(stack.url("broker") + "/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^twintee_broker_junk_key_requests_total\{[^}]*\} (\S+)$", text, re.M))


def test_relayed_evidence_gets_no_key_from_the_broker_and_is_audited_while_junk_is_only_counted(stack, release_dir):
    audit = release_dir / "audit" / "broker.jsonl"
    lines = audit.read_bytes().splitlines()
    r = relay_key_request(stack)
    assert r.status_code == 403 and "report_data" in r.json()["error"]
    after = audit.read_bytes().splitlines()
    assert len(after) == len(lines) + 1  # genuine node1 evidence, relayed: refused, and the chain says so
    assert json.loads(after[-1])["verdict"] == "refused" and json.loads(after[-1])["reason"].startswith("report_data:")
    # Junk from anyone (issue 12): no fsynced audit line each, only a count.
    counted = junk_key_requests(stack)
    statuses = {requests.post(stack.url("broker") + "/key", timeout=10, **kw).status_code
                for kw in [{"json": {"role": "node1"}}, {"data": "x"}] * 100}
    assert statuses == {400, 415}
    assert audit.read_bytes().splitlines() == after and junk_key_requests(stack) == counted + 200


def worker_rss(stack, role: str) -> int:
    import psutil

    master = psutil.Process(stack.procs[role].pid)
    return sum(child.memory_info().rss for child in master.children())


def test_a_huge_chunked_body_is_refused_without_being_buffered(stack):
    # Issue 12: a 300 MB chunked POST got its 413 only at the end and grew node1's RSS by 297 MB.
    before = worker_rss(stack, "node1")
    chunks = (b"x" * (1 << 20) for _ in range(300))  # no Content-Length: sent chunked
    try:
        r = requests.post(stack.url("node1") + "/generate", data=chunks, timeout=120,
                          headers={**stack.auth, "Content-Type": "application/json"})
        assert r.status_code == 413
    except requests.ConnectionError:
        pass  # node1 answered 413 and closed while we were still sending: also a refusal
    grown = worker_rss(stack, "node1") - before
    print(f"node1 RSS grew {grown / 2**20:.1f} MiB for a 300 MiB chunked body")
    assert grown < 64 << 20
    assert requests.get(stack.url("node1") + "/health", timeout=10).status_code == 200


@pytest.mark.parametrize("kwargs, status", [
    ({"data": '{"prompt": "hi"}', "headers": {"Content-Type": "text/plain"}}, 415),
    ({"data": '{"prompt": "\\ud800"}', "headers": {"Content-Type": "application/json"}}, 400),
    ({"data": "[" * 50_000 + "]" * 50_000, "headers": {"Content-Type": "application/json"}}, 400),
])
def test_non_json_and_malformed_json_get_a_json_4xx_from_every_json_endpoint(stack, kwargs, status):
    for url in (stack.url("node1") + "/generate", stack.url("node1") + "/v1/sealed/generate",
                stack.url("node2") + "/v1/handshake/hello"):
        r = requests.post(url, timeout=10, **{**kwargs, "headers": {**kwargs["headers"], **stack.auth}})
        assert r.status_code == status and "error" in r.json(), (url, r.status_code)
    assert requests.get(stack.url("node2") + "/health", timeout=10).status_code == 200


def test_every_process_is_non_dumpable_with_no_core_files(stack):
    # Issue 13's memory hardening: what a same-user process or a crash could otherwise read out.
    import psutil

    for role in ("broker", "node2", "node1"):
        health = requests.get(stack.url(role) + "/health", timeout=10).json()
        assert health["hardening"] == {"dumpable": False, "core_file_limit": 0}, role
        for worker in psutil.Process(stack.procs[role].pid).children():
            limits = open(f"/proc/{worker.pid}/limits").read()
            assert any(line.startswith("Max core file size") and line.split()[4:6] == ["0", "0"]
                       for line in limits.splitlines()), limits

