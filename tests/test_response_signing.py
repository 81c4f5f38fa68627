"""node1/response_signing.py and node1/signature_api.py over a fake pipeline: every completion's exact
request and response bytes signed (the whole SSE byte stream for a stream), GET /v1/signature/{id}, the
signing key's evidence in GET /v1/attestation/report, and client/verify_signature.py against them.
The real processes and the CLI: tests/test_e2e_signature.py."""
import hashlib
import json
import logging
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from attestation.binding import CLIENT_ATTESTATION, report_data
from client.attest import pinned_policy
from client.verify_signature import verify_signature
from node1.app import create_app
from node1.config import Node1Config
from tests.conftest import tenant_gate
from tests.test_client import SimulatedRelease
from tests.test_openai_api import MODEL, FakeRuntime

CHAT = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 0}).encode()


class AttestedRuntime(FakeRuntime):
    """The fake pipeline with node1's identity from a simulated release (evidence its policy accepts)."""

    def __init__(self, sim: SimulatedRelease, records: int = 100):
        super().__init__()
        self.config = Node1Config(max_body_bytes=4096, signature_records=records)
        self.state = "ready"
        node1 = sim.node("node1", b"\0" * 32)
        self.identity.measurement = node1["measurement"]
        self.identity.evidence = sim.attesters["node1"].evidence
        self.release.served_by = lambda role: node1["model"]


@pytest.fixture()
def sim(tmp_path, monkeypatch):
    release = SimulatedRelease(tmp_path)
    # Both nodes' client-attestation evidence as node1's /attestation relays it, without a node2 to ask.
    monkeypatch.setattr("node1.signature_api.evidence_for", lambda rt, nonce: release.attestation(nonce))
    return release


def node1(sim, rt):
    """node1's app over `rt` with a tenant in a throwaway ledger beside the release; `client.auth` is its
    key, which `post` sends. Signature lookups and reports go without one, as verify-signature sends them."""
    gate, key = tenant_gate(sim.dir, rt)
    client = create_app(rt.config, runtime=rt, gate=gate).test_client()
    client.auth = {"Authorization": f"Bearer {key}"}
    return client


@pytest.fixture()
def http(sim):
    return node1(sim, AttestedRuntime(sim))


def post(http, path="/v1/chat/completions", body=CHAT):
    return http.post(path, data=body, content_type="application/json", headers=http.auth)


def signature(http, rid):
    r = http.get(f"/v1/signature/{rid}")
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_signed(record, request_bytes: bytes, response_bytes: bytes):
    assert record["text"] == f"{sha(request_bytes)}:{sha(response_bytes)}" and record["signing_algo"] == "ed25519"
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(record["signing_key"])).verify(
        bytes.fromhex(record["signature"]), record["text"].encode())  # raises InvalidSignature if not


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_plain_completion_is_signed_over_its_exact_bytes(http, path):
    body = CHAT if "chat" in path else json.dumps({"model": MODEL, "prompt": "hi", "temperature": 0}).encode()
    spaced = body.replace(b", ", b" ,  ")  # other bytes, same JSON: the signature is over the bytes sent
    r = post(http, path, spaced)
    record = signature(http, r.get_json()["id"])
    assert record["id"] == r.get_json()["id"]
    assert_signed(record, spaced, r.get_data())


def test_a_stream_is_signed_over_its_whole_sse_bytes(http):
    body = json.dumps({**json.loads(CHAT), "stream": True, "stream_options": {"include_usage": True}}).encode()
    r = post(http, body=body)
    sse = r.get_data()
    assert sse.endswith(b"data: [DONE]\n\n")
    rid = json.loads(sse.split(b"\n\n")[0].removeprefix(b"data: "))["id"]
    assert_signed(signature(http, rid), body, sse)


def test_a_client_that_has_read_done_finds_the_record(http):
    """The record exists once [DONE] is out, not only when the server next asks the stream for more."""
    body = json.dumps({**json.loads(CHAT), "stream": True}).encode()
    stream = post(http, body=body)
    events = []
    for event in stream.response:
        events.append(event)
        if event == b"data: [DONE]\n\n":
            break
    rid = json.loads(events[0].removeprefix(b"data: "))["id"]
    assert_signed(signature(http, rid), body, b"".join(events))
    stream.close()


def test_every_completion_has_its_own_record_and_one_key(http):
    ids = [post(http).get_json()["id"] for _ in range(3)]
    records = [signature(http, rid) for rid in ids]
    assert len({r["signature"] for r in records}) == 3 and len({r["signing_key"] for r in records}) == 1


def test_an_unknown_id_is_a_404_in_openai_shape(http):
    r = http.get("/v1/signature/chatcmpl-nope")
    err = r.get_json()["error"]
    assert r.status_code == 404 and err["code"] == "not_found" and "chatcmpl-nope" in err["message"]
    assert set(err) == {"message", "type", "param", "code"}


def test_a_caller_without_a_key_may_fetch_a_signature_and_the_report(http):
    # node1/auth.py OPEN_PREFIXES: whoever holds the files and the id may verify them (an auditor has
    # no key), the record is two hashes and a signature, the report is public evidence; a generation
    # without a key stays a 401
    rid = post(http).get_json()["id"]
    assert http.get(f"/v1/signature/{rid}").status_code == 200
    assert http.get("/v1/attestation/report?nonce=" + "ab" * 32).status_code == 200
    assert http.post("/v1/chat/completions", data=CHAT, content_type="application/json").status_code == 401


def test_refused_requests_and_abandoned_streams_are_not_signed(sim):
    http = node1(sim, AttestedRuntime(sim))
    assert post(http, body=b'{"model": "gpt-4o", "messages": []}').status_code in (400, 404)
    stream = post(http, body=json.dumps({**json.loads(CHAT), "stream": True}).encode())
    first = next(stream.response)  # the client reads one event, then leaves
    stream.close()
    rid = json.loads(first.removeprefix(b"data: "))["id"]
    assert http.get(f"/v1/signature/{rid}").status_code == 404
    assert http.get("/v1/attestation/report?nonce=" + "ab" * 32).status_code == 200  # the app still answers


def test_the_store_keeps_the_last_n(sim):
    http = node1(sim, AttestedRuntime(sim, records=2))
    ids = [post(http).get_json()["id"] for _ in range(3)]
    assert http.get(f"/v1/signature/{ids[0]}").status_code == 404
    assert all(http.get(f"/v1/signature/{rid}").status_code == 200 for rid in ids[1:])


def test_the_report_binds_the_signing_key_to_the_callers_nonce(http):
    nonce = "cd" * 32
    report = http.get(f"/v1/attestation/report?nonce={nonce}").get_json()
    key = signature(http, post(http).get_json()["id"])["signing_key"]
    assert report["signing_key"] == report["signing"]["public_key"] == key and report["request_nonce"] == nonce
    assert report["signing_algo"] == "ed25519" and {"node1", "node2"} <= set(report)
    assert report["signing"]["evidence"]["report_data"] != report["node1"]["evidence"]["report_data"]


@pytest.mark.parametrize("query", ["", "?nonce=xyz", "?nonce=abcd"])
def test_the_report_needs_a_nonce(http, query):
    r = http.get(f"/v1/attestation/report{query}")
    assert r.status_code == 400 and r.get_json()["error"]["type"] == "invalid_request_error"


def test_nothing_of_the_key_or_content_is_logged(sim, caplog):
    caplog.set_level(logging.DEBUG)
    http = node1(sim, AttestedRuntime(sim))
    record = signature(http, post(http).get_json()["id"])
    assert "signed id=" in caplog.text
    for secret in (record["signature"], record["text"][:64], "hi"):
        assert secret not in caplog.text.replace("signed id=", "")


# --- client/verify_signature.py against the in-process node1 -----------------------------------------


class Http:
    """requests.Session.get as verify_signature calls it, answered by the Flask test client (and an edit)."""

    def __init__(self, client, edit=None):
        self.client, self.edit = client, edit

    def get(self, url, params=None, timeout=None):
        r = self.client.get(url.removeprefix("http://node1"), query_string=params)
        body = r.get_json()
        if self.edit:
            body = self.edit(url, body)
        return SimpleNamespace(status_code=r.status_code, content=json.dumps(body).encode())


def verify(sim, http, rid, request_bytes, response_bytes, edit=None):
    pinned = pinned_policy(sim.dir, None, "http://unused")
    return verify_signature(Http(http, edit), "http://node1", rid, request_bytes, response_bytes, pinned)


def test_the_client_verifies_a_genuine_signature(sim, http):
    r = post(http)
    v = verify(sim, http, r.get_json()["id"], CHAT, r.get_data())
    assert v.ok, v.failed
    assert [c.name for c in v.checks] == ["record", "signing_algo", "request hash", "response hash", "signature",
                                          "key binding"]
    assert v.signing.ok and v.node2.ok


@pytest.mark.parametrize("which", ["request", "response"])
def test_one_changed_byte_fails_naming_the_file(sim, http, which):
    r = post(http)
    files = {"request": bytearray(CHAT), "response": bytearray(r.get_data())}
    files[which][len(files[which]) // 2] ^= 1
    v = verify(sim, http, r.get_json()["id"], bytes(files["request"]), bytes(files["response"]))
    assert not v.ok and v.failed.name == f"{which} hash"
    assert {c.name for c in v.checks if not c.ok} == {f"{which} hash", "signature"}


def forged_record(url, body):
    """A host answering with its own key and a signature that key made: node1's evidence binds another."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if "/v1/signature/" not in url:
        return body
    forger = Ed25519PrivateKey.generate()
    return {**body, "signing_key": forger.public_key().public_bytes_raw().hex(),
            "signature": forger.sign(body["text"].encode()).hex()}


def client_evidence_as_signing(url, body):
    """A host passing node1's client-attestation evidence off as the signing key's."""
    if "/v1/attestation/report" not in url:
        return body
    return {**body, "signing": body["node1"]}


def signing_evidence_for_the_x25519_key(sim):
    """node1's evidence made for the signing purpose but binding another key (its X25519 key)."""
    def edit(url, body):
        if "/v1/attestation/report" not in url:
            return body
        ev = sim.attesters["node1"].evidence(report_data(b"x" * 32, bytes.fromhex(body["request_nonce"]),
                                                         purpose=CLIENT_ATTESTATION))
        return {**body, "signing": {**body["signing"], "evidence": ev}}
    return edit


@pytest.mark.parametrize("edit, failed", [
    (forged_record, "key binding"),
    (client_evidence_as_signing, "key binding"),
    (lambda url, body: {**body, "signing": {"error": "gone"}} if "report" in url else body, "key binding"),
    (lambda url, body: {**body, "signature": "00" * 64} if "/v1/signature/" in url else body, "signature"),
    (lambda url, body: {**body, "signing_algo": "ecdsa"} if "/v1/signature/" in url else body, "signing_algo"),
])
def test_a_host_cannot_pass_off_another_key_or_evidence(sim, http, edit, failed):
    r = post(http)
    v = verify(sim, http, r.get_json()["id"], CHAT, r.get_data(), edit)
    assert not v.ok and v.failed.name == failed


def test_evidence_binding_another_key_fails_the_binding(sim, http):
    r = post(http)
    v = verify(sim, http, r.get_json()["id"], CHAT, r.get_data(), signing_evidence_for_the_x25519_key(sim))
    assert v.failed.name == "key binding" and v.signing.verdict["failed"] == "report_data"


def test_an_unknown_id_fails_at_the_record(sim, http):
    v = verify(sim, http, "chatcmpl-nope", CHAT, b"")
    assert v.failed.name == "record" and "404" in v.failed.detail and len(v.checks) == 1
