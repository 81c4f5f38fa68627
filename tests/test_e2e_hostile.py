"""Hostile clients against the real processes (issue 12): an outsider with no credentials relays
node1's public attestation into node2's handshake and the broker's key release while a victim
generates; the victim's tokens must be its reference tokens, and both relays must be refused. Slow
and oversized clients meet nginx (launcher/proxy.py), which holds them so gunicorn never does."""
import http.client
import json
import os
import re
import socket
import statistics
import threading
import time

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from requests.adapters import HTTPAdapter

from shared import sealed_protocol, step_stream
from shared.handshake import VERSION
from tests.e2e import counter, start_stack

pytestmark = pytest.mark.slow
VICTIM = {"prompt": "List the planets of the solar system, one per line.", "max_tokens": 64}


class _FromAddress(HTTPAdapter):
    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, source_address=(self.address, 0), **kwargs)


def attacker_session() -> requests.Session:
    """The outsider's HTTP client, from its own loopback address (127.0.0.2): nginx holds each client
    address to its own rate, and an attacker on the victim's address would only be rate-limiting the
    victim, which no real outsider can do."""
    session = requests.Session()
    session.mount("http://", _FromAddress("127.0.0.2"))
    return session


ATTACKER = attacker_session()


@pytest.fixture(scope="module")
def stack(release_dir, tmp_path_factory):
    s = start_stack(release_dir, tmp_path_factory.mktemp("logs"))
    yield s
    s.stop()


def node1_evidence_over(stack, nonce_hex: str) -> dict:
    """What node1's public endpoint gives anyone: its key and evidence over a nonce of their choosing."""
    return ATTACKER.get(stack.url("node1") + "/attestation", params={"nonce": nonce_hex}, timeout=10).json()["node1"]


def relay_handshake(stack) -> int:
    """One relay attempt -> the status that stopped it: node2's refusal of the finish (403), or nginx
    holding the attacker to its per-client rate (429) somewhere along the way."""
    first = ATTACKER.get(stack.url("node1") + "/attestation", params={"nonce": "00" * 32}, timeout=10)
    if first.status_code == 429:
        return 429
    m1 = {"version": VERSION, "role": "node1", "nonce": os.urandom(32).hex(), "public_key": first.json()["node1"]["public_key"]}
    hello = ATTACKER.post(stack.url("node2") + "/v1/handshake/hello", json=m1, timeout=10)
    if hello.status_code != 200:  # 429: nginx's rate; 503: node2's table of young handshakes full
        return hello.status_code
    m2 = hello.json()
    relayed = ATTACKER.get(stack.url("node1") + "/attestation", params={"nonce": m2["nonce"]}, timeout=10)
    if relayed.status_code == 429:
        return 429
    m3 = {"handshake_id": m2["handshake_id"], "evidence": relayed.json()["node1"]["evidence"], "confirm": "00" * 32}
    return ATTACKER.post(stack.url("node2") + "/v1/handshake/finish", json=m3, timeout=10).status_code


def relay_key_request(stack) -> requests.Response:
    nonce = ATTACKER.post(stack.url("broker") + "/nonce", timeout=10).json()["nonce"]
    node1 = node1_evidence_over(stack, nonce)
    model = node1["model"]
    return ATTACKER.post(stack.url("broker") + "/key", timeout=10, json={
        "role": "node1", "model_id": model["model_id"], "version": model["version"],
        "public_key": node1["public_key"], "nonce": nonce, "evidence": node1["evidence"]})


RELAY_S = 20.0


def test_relayed_evidence_never_completes_a_handshake_nor_stops_a_victim(stack):
    reference = requests.post(stack.url("node1") + "/generate", headers=stack.auth, json=VICTIM, timeout=120).json()["token_ids"]
    channels_before = requests.get(stack.url("node2") + "/health", timeout=10).json()["channels"]
    refused, victims, t0 = [], [], time.monotonic()

    def victim_loop():  # victims one after another for as long as the relays go on (issue 12: 20 s)
        while time.monotonic() - t0 < RELAY_S:
            victims.append(requests.post(stack.url("node1") + "/generate", headers=stack.auth, json=VICTIM, timeout=120))

    victim = threading.Thread(target=victim_loop)
    victim.start()
    while victim.is_alive() or refused.count(403) < 12:  # more than node2 keeps channels (8)
        refused.append(relay_handshake(stack))
    victim.join()
    print(f"\n{time.monotonic() - t0:.1f} s of relays: {len(refused)} attempts, {refused.count(403)} refused by "
          f"node2, {refused.count(429)} rate-limited, {refused.count(503)} while node2's table was full; "
          f"{len(victims)} victim generations, "
          f"{sum(v.status_code != 200 or v.json()['token_ids'] != reference for v in victims)} failed")
    assert set(refused) <= {403, 429, 503} and refused.count(403) >= 12, refused
    assert victims and all(v.status_code == 200 and v.json()["token_ids"] == reference for v in victims)
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


@pytest.mark.parametrize("plain", [
    b"[" * 60_000,  # a 500 from both routes before the opened request was read by parse_json
    b'{"request": {"prompt": "\\ud800"}, "response_key": "' + b"ab" * 32 + b'"}',
], ids=["nested", "lone-surrogate"])
def test_a_malformed_request_sealed_to_node1s_attested_key_gets_a_json_400(stack, plain):
    """node1's public key is on its attestation for anyone to seal to: what opens is outside input."""
    node1_key = X25519PublicKey.from_public_bytes(bytes.fromhex(node1_evidence_over(stack, "00" * 32)["public_key"]))
    sealed = sealed_protocol.SUITE.encrypt(plain, node1_key, info=sealed_protocol.INFO)
    body = {"enc": sealed[:32].hex(), "ciphertext": sealed[32:].hex()}
    for path in ("/v1/sealed/generate", "/v1/sealed/openai"):
        r = requests.post(stack.url("node1") + path, json=body, timeout=10)
        assert r.status_code == 400 and "error" in r.json(), (path, r.status_code)
    assert requests.get(stack.url("node1") + "/health", timeout=10).status_code == 200


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



class SlowBodies:
    """n connections that send headers declaring a 1 MB body, a few bytes of it, then a byte every
    `every` seconds (issue 12: 32 of them froze node1's /health for 45 s when gunicorn faced clients)."""

    def __init__(self, url: str, path: str, n: int = 64, every: float = 3.0):
        from urllib.parse import urlsplit

        where = urlsplit(url)
        self.socks, self.every, self.stop = [], every, threading.Event()
        head = (f"POST {path} HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: application/json\r\n"
                f"Content-Length: 1000000\r\n\r\n").encode()
        for _ in range(n):
            s = socket.create_connection((where.hostname, where.port), timeout=10)
            s.sendall(head + b'{"prompt": "')
            self.socks.append(s)
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self):
        while not self.stop.wait(self.every):
            for s in self.socks:
                try:
                    s.sendall(b"a")
                except OSError:
                    pass  # dropped by the server: its deadline, which is allowed

    def close(self):
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


def poll_health(urls, until: threading.Event, worst: dict):
    """Times each role's /health every 0.25 s until `until` is set; keeps the slowest answer per URL."""
    while not until.is_set():
        for url in urls:
            t0 = time.monotonic()
            try:
                ok = requests.get(url + "/health", timeout=10).status_code == 200
            except requests.RequestException:
                ok = False
            worst[url] = max(worst.get(url, 0.0), time.monotonic() - t0 if ok else float("inf"))
        until.wait(0.25)


@pytest.mark.parametrize("role, path", [("node1", "/generate"), ("node2", "/v1/step")])
def test_64_slow_bodies_never_hold_the_service(stack, role, path):
    reference = requests.post(stack.url("node1") + "/generate", headers=stack.auth, json=VICTIM,
                              timeout=120).json()["token_ids"]
    attack = SlowBodies(stack.url(role), path)
    done, worst = threading.Event(), {}
    poller = threading.Thread(target=poll_health, args=([stack.url("node1"), stack.url("node2")], done, worst))
    poller.start()
    try:
        t0 = time.monotonic()
        victim = requests.post(stack.url("node1") + "/generate", headers=stack.auth, json=VICTIM, timeout=120)
        took = time.monotonic() - t0
    finally:
        done.set()
        poller.join()
        attack.close()
    print(f"64 slow bodies on {role}{path}: victim generation {took:.1f} s; slowest /health: "
          + ", ".join(f"{u.rsplit(':', 1)[1]} {s:.3f} s" for u, s in worst.items()))
    assert victim.status_code == 200 and victim.json()["token_ids"] == reference
    assert max(worst.values()) < 2.0  # the deadline is the behaviour under test


@pytest.mark.parametrize("role", ["node1", "node2", "broker"])
def test_oversized_headers_and_uris_get_json_errors_from_nginx(stack, role):
    big_header = requests.get(stack.url(role) + "/health", headers={"X-Pad": "a" * 20_000}, timeout=10)
    assert big_header.status_code in (431, 494) and "error" in big_header.json()
    assert big_header.headers["Content-Type"] == "application/json"
    big_uri = requests.get(stack.url(role) + "/" + "a" * 20_000, timeout=10)
    assert big_uri.status_code == 414 and "error" in big_uri.json()
    assert big_uri.headers["Content-Type"] == "application/json"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def get_seconds(conn: http.client.HTTPConnection, path: str) -> float:
    t0 = time.perf_counter()
    conn.request("GET", path)
    conn.getresponse().read()
    return time.perf_counter() - t0


def test_gunicorn_listens_on_no_tcp_port_only_on_a_private_socket(stack):
    import psutil

    for role in ("node1", "node2", "broker"):
        master = psutil.Process(stack.procs[role].pid)
        for proc in (master, *master.children()):
            ports = [c.laddr.port for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
            # node2's worker serves node1's steps on its own port, under its own limits (next test).
            assert ports == ([int(stack.env["TWINTEE_NODE2_STEP_PORT"])] if role == "node2" and proc != master else []), role
        assert stack.socket(role).is_socket() and stack.socket(role).parent.stat().st_mode & 0o077 == 0
    # What nginx adds on node1's link to node2, per step: one more loopback hop, kept alive both ways.
    direct_conn = UnixHTTPConnection(str(stack.socket("node2")))
    via_conn = http.client.HTTPConnection("127.0.0.1", int(stack.url("node2").rsplit(":", 1)[1]), timeout=10)
    pairs = [(get_seconds(direct_conn, "/nope"), get_seconds(via_conn, "/nope")) for _ in range(300)]  # interleaved
    direct, via = (statistics.median(times) for times in zip(*pairs))
    print(f"node2 404 median over 300 kept-alive requests: {direct * 1000:.2f} ms direct to gunicorn, "
          f"{via * 1000:.2f} ms through nginx: "
          f"{(via - direct) * 1000:+.2f} ms per request, i.e. per step on node1's link")


def node1_frames(stack) -> dict:
    text = requests.get(stack.url("node1") + "/metrics", timeout=10).text
    return {t: counter(text, f'twintee_link_frames_total{{transport="{t}"}}') for t in ("socket", "http")}


class StepPortFlood:
    """An outsider on node2's step port: `n` connections at once, each silent, trickling a byte a
    second into a declared frame, sending junk, or claiming a frame past the cap, and reconnecting
    as soon as it is dropped."""

    KINDS = ("silent", "trickle", "junk", "huge")

    def __init__(self, port: int, n: int = 64):
        self.port, self.stop, self.answers = port, threading.Event(), {}
        self.threads = [threading.Thread(target=self._attack, args=(self.KINDS[i % 4],), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def _attack(self, kind: str):
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                    if kind == "junk":
                        s.sendall(step_stream.request_record(b"TT01" + os.urandom(200)))
                    elif kind == "huge":
                        s.sendall(step_stream.REQUEST.pack(step_stream.MAX_FRAME_BYTES + 1))
                    elif kind == "trickle":
                        s.sendall(step_stream.REQUEST.pack(1000))
                    while not self.stop.is_set():
                        if kind == "trickle":
                            s.sendall(b"x")
                        if kind in ("junk", "huge"):
                            status = step_stream.read_reply(s, time.monotonic() + 10)[0]
                            self.answers[status] = self.answers.get(status, 0) + 1
                        elif s.recv(1) == b"":
                            break
                        self.stop.wait(1.0)
            except OSError:
                self.stop.wait(0.05)  # dropped or refused: come straight back

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)


def test_a_flooded_step_port_neither_stops_nor_slows_node1s_steps_to_a_halt(stack):
    """The step socket faces the network without nginx: 64 hostile connections churn through its 32
    slots while a victim generates. node1's own connection is never evicted (it is busy), the victim's
    tokens are its reference tokens, and the attackers got only refusals."""
    reference = requests.post(stack.url("node1") + "/generate", headers=stack.auth, json=VICTIM,
                              timeout=120).json()["token_ids"]
    before = node1_frames(stack)
    attack = StepPortFlood(int(stack.env["TWINTEE_NODE2_STEP_PORT"]))
    try:
        time.sleep(2)  # the port full of strangers before the victim starts
        victim = requests.post(stack.url("node1") + "/generate", headers=stack.auth, json=VICTIM, timeout=120)
        health = requests.get(stack.url("node2") + "/health", timeout=5)
    finally:
        attack.close()
    after = node1_frames(stack)
    metrics = requests.get(stack.url("node2") + "/metrics", timeout=10).text
    print(f"step port flood: attackers answered {attack.answers}; node1's frames over the socket "
          f"{after['socket'] - before['socket']:.0f}, over HTTP {after['http'] - before['http']:.0f}")
    assert victim.status_code == 200 and victim.json()["token_ids"] == reference
    assert health.status_code == 200
    assert after["socket"] - before["socket"] >= len(reference) - 1  # the fast path held throughout
    assert set(attack.answers) <= {400, 413} and attack.answers.get(413) and attack.answers.get(400)
    assert re.search(r'twintee_step_socket_connections_total\{event="evicted"\} [1-9]', metrics)
