"""Tests for attestation/broker: key release through Flask's test client with a fake appraiser."""
import dataclasses
import io
import os
import re
import threading
from urllib.parse import urlsplit

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from attestation.binding import CLIENT_ATTESTATION, KEY_REQUEST, report_data
from broker.app import create_app
from broker.audit import verify_chain
from attestation.key_request import KeyReleaseError, fetch_shard_key
from broker.config import BrokerConfig, ConfigError
from broker.kms import MasterKey, derive_shard_key, load_master_key
from attestation.key_wrap import WrapError, unwrap_key, wrap_key
from attestation.errors import AttestationError
from attestation.canonical import canonical_json
from attestation.manifest import (key_id, manifest_path, raw_public_key, sign_manifest,
                             write_manifest)

MODEL, VERSION = "smollm2-135m", 3
MASTER = MasterKey(os.urandom(32))
OWNER = Ed25519PrivateKey.generate()
# The fake "hardware": one Ed25519 key signs evidence claims; reference measurements per role.
HW_ROOT = Ed25519PrivateKey.generate()
REFERENCE = {"node1": "11" * 32, "node2": "22" * 32}


def make_evidence(measurement: str, rd: bytes, signer=HW_ROOT) -> dict:
    claims = {"measurement": measurement, "report_data": rd.hex()}
    return {"claims": claims, "signature": signer.sign(canonical_json(claims)).hex()}


def fake_appraise(evidence: dict, expected_role: str, expected_report_data: bytes) -> dict:
    claims = evidence.get("claims")
    try:
        HW_ROOT.public_key().verify(bytes.fromhex(evidence["signature"]), canonical_json(claims))
    except (InvalidSignature, KeyError, TypeError, ValueError):
        raise AttestationError("signature", "evidence signature does not verify") from None
    if claims.get("measurement") != REFERENCE[expected_role]:
        raise AttestationError("measurement", f"not the reference measurement of {expected_role}")
    if claims.get("report_data") != expected_report_data.hex():
        raise AttestationError("report_data", "evidence is not bound to this key and nonce")
    return {"measurement": claims["measurement"], "role": expected_role}


def make_body(version: int, model_id: str) -> dict:
    def shard(role):
        return {"file": f"{role}.shard", "plaintext_sha256": "a" * 64,
                "ciphertext_sha256": "b" * 64, "size": 1, "key_id": key_id(model_id, version, role)}
    return {"model_id": model_id, "version": version, "split_layer": 15, "num_layers": 30,
            "config_sha256": "c" * 64, "tokenizer_sha256": "d" * 64, "created_at": "2025-01-01",
            "shards": {role: shard(role) for role in ("node1", "node2")}}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def config(tmp_path):
    (tmp_path / "owner.pub").write_bytes(raw_public_key(OWNER.public_key()))
    doc = sign_manifest(make_body(VERSION, MODEL), OWNER)
    write_manifest(manifest_path(tmp_path / "data"), doc)
    return BrokerConfig(audit_log=tmp_path / "audit" / "broker.jsonl", data_dir=tmp_path / "data",
                        release_public_key=tmp_path / "owner.pub", master_key_hex="00" * 32)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def client(config, clock):
    app = create_app(config, appraise=fake_appraise, min_version_for=lambda m: 2,
                     master_key=MASTER, clock=clock)
    return app.test_client()


class FlaskSession:
    """Lets the real client code talk to Flask's test client (a requests.Session look-alike)."""

    def __init__(self, client):
        self.client = client

    def post(self, url, json, timeout, stream=False):
        return FlaskResponse(self.client.post(urlsplit(url).path, json=json))


class FlaskResponse:
    def __init__(self, resp):
        self.status_code, self.raw = resp.status_code, FlaskBody(resp.get_data())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class FlaskBody(io.BytesIO):
    def read(self, n=-1, decode_content=False):
        return super().read(n)


def node_attester(measurement: str):
    return lambda rd: make_evidence(measurement, rd)


def ask(client, role="node1", measurement=REFERENCE["node1"], version=VERSION, nonce=None,
        evidence_nonce=None, purpose=KEY_REQUEST):
    """One POST /key as a node would send it; returns (response, the node's private key)."""
    private = X25519PrivateKey.generate()
    pub = raw_public_key(private.public_key())
    nonce = nonce or bytes.fromhex(client.post("/nonce").get_json()["nonce"])
    evidence = make_evidence(measurement, report_data(pub, evidence_nonce or nonce, purpose=purpose))
    resp = client.post("/key", json={"role": role, "model_id": MODEL, "version": version,
                                     "public_key": pub.hex(), "nonce": nonce.hex(),
                                     "evidence": evidence})
    return resp, private


def audit_entries(config):
    ok, entries, _ = verify_chain(config.audit_log)
    assert ok
    return entries


def assert_refused(config, resp, status, check):
    assert resp.status_code == status
    body = resp.get_json()
    assert set(body) == {"error"} and "wrapped" not in body
    last = audit_entries(config)[-1]
    assert last["verdict"] == "refused" and last["reason"].startswith(f"{check}:")
    return body["error"]


def audit_lines(config) -> int:
    return config.audit_log.read_bytes().count(b"\n") if config.audit_log.exists() else 0


def junk_count(client, check: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    found = re.search(rf'^twintee_broker_junk_key_requests_total{{check="{check}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def assert_junk(config, client, send, status, check):
    """`send()` is refused with `status` as junk: counted under `check`, no audit line (issue 12)."""
    lines, before = audit_lines(config), junk_count(client, check)
    resp = send()
    assert resp.status_code == status
    body = resp.get_json()
    assert set(body) == {"error"} and "wrapped" not in body
    assert audit_lines(config) == lines and junk_count(client, check) == before + 1
    return body["error"]


def test_release_through_client_yields_derived_key(client, config):
    for role in ("node1", "node2"):
        kid, key = fetch_shard_key("http://broker", role=role, model_id=MODEL, version=VERSION,
                                   attester=node_attester(REFERENCE[role]),
                                   session=FlaskSession(client))
        assert kid == key_id(MODEL, VERSION, role)
        assert key == derive_shard_key(MASTER, MODEL, VERSION, role)
    entries = audit_entries(config)
    assert [e["verdict"] for e in entries] == ["released", "released"]
    assert entries[1]["who"]["measurement"] == REFERENCE["node2"]
    assert entries[1]["what"] == {"model_id": MODEL, "version": VERSION, "role": "node2",
                                  "key_id": key_id(MODEL, VERSION, "node2")}
    text = config.audit_log.read_text()
    for role in ("node1", "node2"):
        assert derive_shard_key(MASTER, MODEL, VERSION, role).hex() not in text


def test_answer_carries_only_wrapped_key(client):
    resp, private = ask(client)
    assert resp.status_code == 200
    body = resp.get_json()
    key = derive_shard_key(MASTER, MODEL, VERSION, "node1")
    assert key.hex() not in resp.get_data(as_text=True)
    assert unwrap_key(body["wrapped"], private, model_id=MODEL, version=VERSION, role="node1",
                      key_id=body["key_id"]) == key


def test_wrong_measurement(client, config):
    resp, _ = ask(client, measurement="33" * 32)
    assert "measurement" in assert_refused(config, resp, 403, "measurement")


def test_node1_evidence_cannot_fetch_node2_key(client, config):
    resp, _ = ask(client, role="node2", measurement=REFERENCE["node1"])
    assert_refused(config, resp, 403, "measurement")


def test_evidence_a_node_gave_a_client_is_refused_and_audited_as_refused(client, config):
    # Issue 12: node1's public /attestation answers any nonce; relayed here over the broker's own
    # nonce it made the audit log say "released". Its purpose is client attestation, not a key request.
    resp, _ = ask(client, purpose=CLIENT_ATTESTATION)
    assert_refused(config, resp, 403, "report_data")  # and the audit log says refused


def test_stale_evidence_bound_to_an_old_nonce(client, config):
    old = bytes.fromhex(client.post("/nonce").get_json()["nonce"])
    resp, _ = ask(client, evidence_nonce=old)
    assert_refused(config, resp, 403, "report_data")


def test_evidence_signed_by_someone_else(client, config):
    private = X25519PrivateKey.generate()
    pub = raw_public_key(private.public_key())
    nonce = bytes.fromhex(client.post("/nonce").get_json()["nonce"])
    forged = make_evidence(REFERENCE["node1"], report_data(pub, nonce, purpose=KEY_REQUEST),
                           signer=Ed25519PrivateKey.generate())
    # Evidence no trusted platform signed could come from anyone: junk, counted, not audited.
    assert_junk(config, client, lambda: client.post("/key", json={
        "role": "node1", "model_id": MODEL, "version": VERSION, "public_key": pub.hex(), "nonce": nonce.hex(),
        "evidence": forged}), 403, "signature")


def test_replayed_nonce(client, config):
    first, _ = ask(client)
    assert first.status_code == 200
    nonce = bytes.fromhex(client.post("/nonce").get_json()["nonce"])
    ask(client, nonce=nonce)
    assert "already used" in assert_junk(config, client, lambda: ask(client, nonce=nonce)[0], 403, "nonce")


def test_nonce_used_up_even_by_a_refused_request(client, config):
    nonce = bytes.fromhex(client.post("/nonce").get_json()["nonce"])
    ask(client, nonce=nonce, measurement="33" * 32)
    assert audit_entries(config)[-1]["reason"].startswith("measurement:")  # genuine evidence, refused: audited
    assert_junk(config, client, lambda: ask(client, nonce=nonce)[0], 403, "nonce")


def test_unknown_nonce(client, config):
    assert "not issued" in assert_junk(config, client, lambda: ask(client, nonce=os.urandom(32))[0], 403, "nonce")


def test_expired_nonce(client, config, clock):
    nonce = bytes.fromhex(client.post("/nonce").get_json()["nonce"])
    clock.now += config.nonce_ttl_seconds + 1
    assert "older than" in assert_junk(config, client, lambda: ask(client, nonce=nonce)[0], 403, "nonce")


def test_version_below_minimum(client, config):
    resp, _ = ask(client, version=1)
    assert "minimum" in assert_refused(config, resp, 403, "rollback")


def test_version_not_released(client, config):
    resp, _ = ask(client, version=4)
    assert "not released" in assert_refused(config, resp, 404, "version")


@pytest.mark.parametrize("payload", [
    [], {"role": "node3"},
    {"role": "node1", "model_id": MODEL, "version": VERSION, "public_key": "zz", "nonce": "00",
     "evidence": {}},
])
def test_malformed_request(client, config, payload):
    assert_junk(config, client, lambda: client.post("/key", json=payload), 400, "request")


def test_a_post_that_is_not_json_is_refused_before_the_audit_log(client, config):
    # Junk from anyone must not cost an fsynced audit line each (issue 12).
    assert_junk(config, client, lambda: client.post("/key"), 415, "json")


def test_low_order_public_key(client, config):
    nonce = bytes.fromhex(client.post("/nonce").get_json()["nonce"])
    pub = bytes(32)
    resp = client.post("/key", json={
        "role": "node1", "model_id": MODEL, "version": VERSION, "public_key": pub.hex(),
        "nonce": nonce.hex(),
        "evidence": make_evidence(REFERENCE["node1"], report_data(pub, nonce, purpose=KEY_REQUEST))})
    assert_refused(config, resp, 400, "public_key")


def test_broken_manifest_refuses(client, config):
    manifest_path(config.data_dir).write_text("{}")
    resp, _ = ask(client)
    assert_refused(config, resp, 503, "manifest")


def test_unwritable_audit_log_releases_nothing(config, clock, tmp_path):
    blocked = BrokerConfig(audit_log=tmp_path / "dir-not-file", data_dir=config.data_dir,
                           release_public_key=config.release_public_key, master_key_hex="00" * 32)
    blocked.audit_log.mkdir()
    app = create_app(blocked, appraise=fake_appraise, min_version_for=lambda m: 0, clock=clock)
    resp, _ = ask(app.test_client())
    assert resp.status_code == 503 and "wrapped" not in resp.get_json()


def test_health_nonce_and_json_errors(client):
    health = client.get("/health").get_json()
    assert health["status"] == "ok" and set(health["hardening"]) == {"dumpable", "core_file_limit"}
    nonces = {client.post("/nonce").get_json()["nonce"] for _ in range(3)}
    assert len(nonces) == 3 and all(len(n) == 64 for n in nonces)
    assert client.get("/nope").status_code == 404 and "error" in client.get("/nope").get_json()
    assert client.get("/key").status_code == 405
    assert client.get("/key").get_json() == {"error": "method not allowed"}  # the nodes' handler, not HTML
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and 'twintee_requests_total{endpoint="/nonce",status="200"} 3.0' in metrics.text
    assert "twintee_broker_outstanding_nonces 3.0" in metrics.text


def test_nonce_store_is_bounded(config, clock):
    small = dataclasses.replace(config, max_nonces=2)
    app = create_app(small, appraise=fake_appraise, min_version_for=lambda m: 0, clock=clock)
    c = app.test_client()
    assert [c.post("/nonce").status_code for _ in range(3)] == [200, 200, 503]
    clock.now += small.nonce_ttl_seconds + 1  # expired nonces make room again
    assert c.post("/nonce").status_code == 200


def test_client_raises_with_broker_message(client):
    with pytest.raises(KeyReleaseError, match="measurement") as e:
        fetch_shard_key("http://broker", role="node2", model_id=MODEL, version=VERSION,
                        attester=node_attester(REFERENCE["node1"]), session=FlaskSession(client))
    assert e.value.status == 403


def test_client_over_real_http(config, clock):
    from werkzeug.serving import make_server
    app = create_app(config, appraise=fake_appraise, min_version_for=lambda m: 0, master_key=MASTER)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        _, key = fetch_shard_key(url, role="node1", model_id=MODEL, version=VERSION,
                                 attester=node_attester(REFERENCE["node1"]))
        assert key == derive_shard_key(MASTER, MODEL, VERSION, "node1")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(KeyReleaseError, match="unreachable"):
        fetch_shard_key(url, role="node1", model_id=MODEL, version=VERSION,
                        attester=node_attester(REFERENCE["node1"]), timeout=2)


BINDING = {"model_id": MODEL, "version": VERSION, "role": "node1",
           "key_id": "smollm2-135m:v3:node1"}


def test_hpke_wrap_round_trip_and_wrong_recipient():
    recipient, secret = X25519PrivateKey.generate(), os.urandom(32)
    wrapped = wrap_key(secret, raw_public_key(recipient.public_key()), **BINDING)
    assert unwrap_key(wrapped, recipient, **BINDING) == secret
    with pytest.raises(WrapError, match="wrong recipient"):
        unwrap_key(wrapped, X25519PrivateKey.generate(), **BINDING)


@pytest.mark.parametrize("field, value", [("role", "node2"), ("version", 4), ("key_id", "x"),
                                          ("model_id", "other")])
def test_hpke_binding_mismatch_fails(field, value):
    recipient = X25519PrivateKey.generate()
    wrapped = wrap_key(os.urandom(32), raw_public_key(recipient.public_key()), **BINDING)
    with pytest.raises(WrapError):
        unwrap_key(wrapped, recipient, **{**BINDING, field: value})


def test_kms_derivation_separates_fields_and_hides_master(tmp_path):
    keys = {derive_shard_key(MASTER, m, v, r) for m, v, r in
            [(MODEL, 3, "node1"), (MODEL, 3, "node2"), (MODEL, 4, "node1"), ("other", 3, "node1")]}
    assert len(keys) == 4 and all(len(k) == 32 for k in keys)
    assert derive_shard_key(MASTER, MODEL, 3, "node1") in keys  # deterministic
    secret = os.urandom(32)
    (tmp_path / "mk").write_bytes(secret)
    from_file = load_master_key(path=tmp_path / "mk")
    from_hex = load_master_key(hex_value=secret.hex())
    assert derive_shard_key(from_file, MODEL, 3, "node1") == derive_shard_key(
        from_hex, MODEL, 3, "node1")
    assert secret.hex() not in repr(from_file) + str(from_hex)


def test_config_from_env(tmp_path):
    env = {"TWINTEE_BROKER_AUDIT_LOG": "a.jsonl", "TWINTEE_BROKER_DATA_DIR": "data",
           "TWINTEE_BROKER_RELEASE_PUBLIC_KEY": "owner.pub", "TWINTEE_BROKER_MASTER_KEY": "ab" * 32,
           "TWINTEE_BROKER_PORT": "9000"}
    cfg = BrokerConfig.from_env(env)
    assert cfg.port == 9000 and cfg.data_dir.name == "data" and "ab" * 32 not in repr(cfg)
    for broken in [{"TWINTEE_BROKER_PORT": "0"}, {"TWINTEE_BROKER_PORT": "x"},
                   {"TWINTEE_BROKER_MASTER_KEY_FILE": "mk"}, {"TWINTEE_BROKER_DATA_DIR": ""}]:
        with pytest.raises(ConfigError):
            BrokerConfig.from_env({**env, **broken})



@pytest.mark.parametrize("raw", ['{"role": "\\ud800"}', "[" * 20_000 + "]" * 20_000, "not json"])
def test_malformed_json_is_a_400_naming_it_not_a_500(client, raw):
    # Issue 12: lone surrogates and 100,000-deep nesting got 500 from every service.
    r = client.post("/key", data=raw, content_type="application/json")
    assert r.status_code == 400 and "error" in r.get_json()


def test_other_content_types_get_415(client):
    r = client.post("/key", data='{"role": "node1"}', content_type="text/plain")
    assert r.status_code == 415 and "application/json" in r.get_json()["error"]


def test_a_thousand_junk_key_requests_add_no_audit_line_but_relayed_evidence_does(client, config):
    """Issue 12: every unauthenticated POST /key appended an fsynced audit line. Junk (not JSON, not a
    key request, no nonce of ours, evidence no trusted platform signed) is now only counted, while a
    refusal of genuine evidence (here node1's client-attestation evidence relayed as a key request)
    stays in the chain."""
    ask(client)  # one release, so the log exists and has a head to compare against
    lines = audit_lines(config)
    pub = raw_public_key(X25519PrivateKey.generate().public_key())

    def forged():
        nonce = bytes.fromhex(client.post("/nonce").get_json()["nonce"])
        evidence = make_evidence(REFERENCE["node1"], report_data(pub, nonce, purpose=KEY_REQUEST),
                                 signer=Ed25519PrivateKey.generate())
        return {"role": "node1", "model_id": MODEL, "version": VERSION, "public_key": pub.hex(),
                "nonce": nonce.hex(), "evidence": evidence}

    junk = [
        ("json", 415, lambda: client.post("/key", data="role=node1")),
        ("json", 400, lambda: client.post("/key", data="{", content_type="application/json")),
        ("request", 400, lambda: client.post("/key", json={"role": "node1"})),
        ("nonce", 403, lambda: ask(client, nonce=os.urandom(32))[0]),
        ("signature", 403, lambda: client.post("/key", json=forged())),
    ]
    for i in range(1000):
        check, status, send = junk[i % len(junk)]
        assert send().status_code == status
    assert audit_lines(config) == lines
    counts = {check: junk_count(client, check) for check in ("json", "request", "nonce", "signature")}
    assert counts == {"json": 400, "request": 200, "nonce": 200, "signature": 200}

    resp, _ = ask(client, purpose=CLIENT_ATTESTATION)
    assert_refused(config, resp, 403, "report_data")
    assert audit_lines(config) == lines + 1 and verify_chain(config.audit_log)[0]


def test_a_broker_without_a_policy_refuses_to_start_with_one_line(capsys):
    # The nodes' way (attestation.service.config_or_exit): exit status 4, no stack trace.
    from attestation.service import config_or_exit
    from broker.wsgi import _read_config
    env = {"TWINTEE_BROKER_AUDIT_LOG": "a.jsonl", "TWINTEE_BROKER_DATA_DIR": "data",
           "TWINTEE_BROKER_RELEASE_PUBLIC_KEY": "owner.pub", "TWINTEE_BROKER_MASTER_KEY": "ab" * 32}
    with pytest.raises(SystemExit) as exited:
        config_or_exit(_read_config, env)
    err = capsys.readouterr().err
    assert exited.value.code == 4 and err.count("\n") == 1 and "TWINTEE_BROKER_POLICY is not set" in err
    assert config_or_exit(_read_config, {**env, "TWINTEE_BROKER_POLICY": "p.json"}).policy_path.name == "p.json"
