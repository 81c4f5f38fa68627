"""node1/sealed.py and node1/attestation_api.py against a fake runtime: HPKE request opening, sealed reply
events (shared/sealed_protocol.py), /attestation and /policy."""
import json
import logging
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.conftest import tenant_gate
from client.sealed import EventOpener, SealedStreamError, open_stream, seal_request
from node1.app import create_app
from node1.config import Node1Config
from node1.scheduler import Finished
from node1.text import PromptTooLong
from shared.config import TeeSettings
from shared.loading import Release
from shared import sealed_protocol
from shared.metrics import NodeMetrics

ROOT = Path(__file__).resolve().parents[1]
HPKE_MOD = ROOT / "webui" / "vendor" / "hpke-core" / "esm" / "mod.js"
REPLY = "Hello there"
SECRET_PROMPT = "my secret prompt 7731"

# RFC 9180 appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode, sequence 0.
# The RFC has no X25519 vector with AES-256-GCM; the suites differ only in the AEAD key length.
RFC9180_A1 = {
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "ikmE": "7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234",
    "enc": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    "pkRm": "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
    "skRm": "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
    "pt": "4265617574792069732074727574682c20747275746820626561757479",
    "aad": "436f756e742d30",
    "ct": "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
}

# Runs in node and in the browser: @hpke/core, as vendored, must reproduce the RFC's ciphertext.
HPKE_VECTOR_JS = """
const h = (s) => Uint8Array.from(s.match(/../g).map((b) => parseInt(b, 16)));
const x = (b) => Array.from(new Uint8Array(b), (v) => v.toString(16).padStart(2, "0")).join("");
async function rfcVector(lib, v) {
  const suite = new lib.CipherSuite({kem: new lib.DhkemX25519HkdfSha256(), kdf: new lib.HkdfSha256(), aead: new lib.Aes128Gcm()});
  const ekm = await suite.kem.deriveKeyPair(h(v.ikmE).buffer);
  const pk = await suite.kem.deserializePublicKey(h(v.pkRm).buffer);
  const sender = await suite.createSenderContext({recipientPublicKey: pk, info: h(v.info).buffer, ekm});
  const ct = await sender.seal(h(v.pt).buffer, h(v.aad).buffer);
  return {enc: x(sender.enc), ct: x(ct)};
}
"""


class FakeCodec:
    eos_ids = frozenset({0})

    def encode_chat(self, messages, max_input_tokens):
        ids = [ord(c) for m in messages for c in m["content"]]
        if len(ids) > max_input_tokens:
            raise PromptTooLong(f"the prompt is {len(ids)} tokens; the maximum input length is {max_input_tokens}")
        return ids

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


class FakeScheduler:
    def submit(self, gen):
        for c in REPLY[: gen.max_tokens]:
            gen.out.put([ord(c)])
        gen.out.put(Finished("stop" if gen.max_tokens >= len(REPLY) else "length"))


class FakeRuntime:
    """Just what create_app and the sealed blueprint touch; node2 is unreachable on purpose."""

    def __init__(self, data_dir: Path):
        self.config = Node1Config(tee=TeeSettings(data_dir=data_dir))
        self.state, self.reason = "ready", "ready"
        self.metrics = NodeMetrics("node1")
        self.codec, self.scheduler = FakeCodec(), FakeScheduler()
        self.identity = SimpleNamespace(key=X25519PrivateKey.generate())
        self.identity.evidence_for_nonce = lambda nonce: {"role": "node1", "nonce": nonce.hex(), "evidence": {}}
        self.link = SimpleNamespace(url="http://127.0.0.1:9", peer_verdict={"ok": True})
        self.release = Release(data_dir / "model", {"model_id": "tiny", "version": 3, "split_layer": 2}, {
            "model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 4,
            "intermediate_size": 16, "vocab_size": 32, "rms_norm_eps": 1e-5})

    @property
    def public_key(self) -> bytes:
        from shared.identity import raw_public
        return raw_public(self.identity.key)

    def health(self, probe: bool = True):
        return {"status": "ok"}, 200

    def submit(self, gen):
        self.scheduler.submit(gen)

    def refresh_gauges(self) -> None:
        pass


@pytest.fixture()
def rt(tmp_path):
    (tmp_path / "policy.json").write_bytes(b'{"body": {"x": 1.0}, "signature": "ab"}')
    return FakeRuntime(tmp_path)


@pytest.fixture()
def http(rt, tmp_path):
    gate, rt.api_key = tenant_gate(tmp_path, rt)
    return create_app(rt.config, runtime=rt, gate=gate).test_client()


def post_sealed(http, rt, body):
    wire, key = seal_request({**body, "api_key": rt.api_key}, rt.public_key)
    r = http.post("/v1/sealed/generate", json=wire)
    return r, key


def test_rfc9180_a1_vector_opens_with_the_server_library():
    """The constants above are the RFC's: pyca/cryptography's HPKE opens them."""
    from cryptography.hazmat.bindings._rust import openssl as rust
    v = {k: bytes.fromhex(val) for k, val in RFC9180_A1.items()}
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
    sk = X25519PrivateKey.from_private_bytes(v["skRm"])
    assert rust.hpke._decrypt_with_aad(suite, v["enc"] + v["ct"], sk, info=v["info"], aad=v["aad"]) == v["pt"]


def run_node(script: str) -> dict:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the browser test checks the vendored HPKE library instead")
    out = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_vendored_hpke_library_reproduces_the_rfc_vector():
    script = f"import * as lib from {json.dumps(str(HPKE_MOD))};\n{HPKE_VECTOR_JS}\n" \
             f"console.log(JSON.stringify(await rfcVector(lib, {json.dumps(RFC9180_A1)})));"
    assert run_node(script) == {"enc": RFC9180_A1["enc"], "ct": RFC9180_A1["ct"]}


def test_vendored_hpke_library_seals_what_node1_opens():
    """AES-256-GCM and our info string: the page's library and the server's agree."""
    key = X25519PrivateKey.generate()
    from shared.identity import raw_public
    inner = {"request": {"prompt": "hi"}, "response_key": "11" * 32}
    script = f"""import * as lib from {json.dumps(str(HPKE_MOD))};
const h = (s) => Uint8Array.from(s.match(/../g).map((b) => parseInt(b, 16)));
const x = (b) => Array.from(new Uint8Array(b), (v) => v.toString(16).padStart(2, "0")).join("");
const suite = new lib.CipherSuite({{kem: new lib.DhkemX25519HkdfSha256(), kdf: new lib.HkdfSha256(), aead: new lib.Aes256Gcm()}});
const pk = await suite.kem.deserializePublicKey(h("{raw_public(key).hex()}").buffer);
const s = await suite.createSenderContext({{recipientPublicKey: pk, info: new TextEncoder().encode("{sealed_protocol.INFO.decode()}")}});
const ct = await s.seal(new TextEncoder().encode({json.dumps(json.dumps(inner))}));
console.log(JSON.stringify({{enc: x(s.enc), ciphertext: x(ct)}}));"""
    req, response_key = sealed_protocol.open_request(run_node(script), key)
    assert req == {"prompt": "hi"} and response_key == bytes.fromhex("11" * 32)


def test_sealed_round_trip_streams_the_reply_in_order(http, rt):
    r, key = post_sealed(http, rt, {"prompt": "Say hello", "max_tokens": 32})
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    body = r.get_data(as_text=True)
    assert "Hello" not in body and "token_id" not in body  # the host sees only ciphertext
    events = list(open_stream(body.splitlines(), key))
    assert "".join(e["text"] for e in events if "text" in e) == REPLY
    assert [e["token_id"] for e in events if "token_id" in e] == [ord(c) for c in REPLY]
    assert events[-1]["finish_reason"] == "stop" and events[-1]["usage"]["completion_tokens"] == len(REPLY)


def test_logs_hold_no_content(http, rt, caplog):
    caplog.set_level(logging.DEBUG)
    r, key = post_sealed(http, rt, {"prompt": SECRET_PROMPT})
    list(open_stream(r.get_data(as_text=True).splitlines(), key))
    assert SECRET_PROMPT not in caplog.text and REPLY not in caplog.text
    assert "sealed generate session=" in caplog.text


def sealed_lines(http, rt):
    r, key = post_sealed(http, rt, {"prompt": "x"})
    return [line for line in r.get_data(as_text=True).splitlines() if line], key


def test_a_dropped_event_is_detected(http, rt):
    lines, key = sealed_lines(http, rt)
    with pytest.raises(SealedStreamError, match="event 2 does not open"):
        list(open_stream(lines[:2] + lines[3:], key))


def test_reordered_events_are_detected(http, rt):
    lines, key = sealed_lines(http, rt)
    with pytest.raises(SealedStreamError, match="event 0"):
        list(open_stream([lines[1], lines[0], *lines[2:]], key))


def test_a_stream_cut_before_its_sealed_end_is_detected(http, rt):
    lines, key = sealed_lines(http, rt)
    with pytest.raises(SealedStreamError, match="without its sealed end"):
        list(open_stream(lines[:-1], key))


def test_an_altered_event_is_detected(http, rt):
    lines, key = sealed_lines(http, rt)
    flipped = lines[1][:-1] + ("0" if lines[1][-1] != "0" else "1")
    with pytest.raises(SealedStreamError, match="event 1"):
        list(open_stream([lines[0], flipped, *lines[2:]], key))
    with pytest.raises(SealedStreamError, match="after the sealed end"):
        opener = EventOpener(key)
        for line in [*lines, lines[-1]]:
            opener.open(line.removeprefix("data: "))


def tampered(wire: dict, field: str) -> dict:
    raw = bytearray(bytes.fromhex(wire[field]))
    raw[len(raw) // 2] ^= 1
    return {**wire, field: raw.hex()}


@pytest.mark.parametrize("mutate, message", [
    (lambda w: tampered(w, "ciphertext"), "does not open"),
    (lambda w: tampered(w, "enc"), "does not open"),
    (lambda w: {**w, "enc": "zz" + w["enc"][2:]}, "'enc' is not valid hex"),
    (lambda w: {**w, "ciphertext": 7}, "'ciphertext' must be a hex string"),
    (lambda w: {**w, "enc": w["enc"][:-2]}, "'enc' must be 32 bytes"),
    (lambda w: {"enc": w["enc"]}, "'ciphertext' must be a hex string"),
    (lambda w: [w], "JSON object"),
])
def test_bad_sealed_requests_are_400_naming_the_problem(http, rt, mutate, message):
    wire, _ = seal_request({"prompt": "hi"}, rt.public_key)
    r = http.post("/v1/sealed/generate", json=mutate(wire))
    assert r.status_code == 400 and message in r.get_json()["error"]


def seal_raw(rt, plain: bytes) -> dict:
    sealed_bytes = sealed_protocol.SUITE.encrypt(plain, rt.identity.key.public_key(), info=sealed_protocol.INFO)
    return {"enc": sealed_bytes[:32].hex(), "ciphertext": sealed_bytes[32:].hex()}


@pytest.mark.parametrize("plain, message", [
    (b"not json", "the opened request: the request body is not valid JSON"),
    # Anyone can seal to node1's public key: what opens is outside input, read as strictly as a body.
    (b"[" * 60_000, "the opened request: the request body nests deeper than 64 levels"),
    (b'{"request": {"prompt": "\\ud800"}, "response_key": "' + b"ab" * 32 + b'"}', "not valid Unicode"),
    (json.dumps({"request": {"prompt": "x"}, "response_key": " ab" * 32}).encode(), "'response_key' must be 32 bytes"),
    (json.dumps({"request": {"prompt": "x"}}).encode(), "the opened request must be"),
    (json.dumps({"request": {"prompt": "x"}, "response_key": "ab"}).encode(), "'response_key' must be 32 bytes"),
    (json.dumps({"request": {"prompt": ""}, "response_key": "ab" * 32}).encode(), "inner request: give either"),
    (json.dumps({"request": {"prompt": "x" * 5000}, "response_key": "ab" * 32}).encode(), "inner request: the prompt is"),
])
def test_bad_inner_requests_are_400(http, rt, plain, message):
    if b'"response_key": "' + b"ab" * 32 in plain:  # past the envelope: the key is checked first
        inner = json.loads(plain)
        plain = json.dumps({**inner, "request": {**inner["request"], "api_key": rt.api_key}}).encode()
    r = http.post("/v1/sealed/generate", json=seal_raw(rt, plain))
    assert r.status_code == 400 and message in r.get_json()["error"]


def test_a_request_sealed_with_another_info_is_refused(http, rt):
    plain = json.dumps({"request": {"prompt": "x"}, "response_key": "ab" * 32}).encode()
    raw = sealed_protocol.SUITE.encrypt(plain, rt.identity.key.public_key(), info=b"another protocol")
    r = http.post("/v1/sealed/generate", json={"enc": raw[:32].hex(), "ciphertext": raw[32:].hex()})
    assert r.status_code == 400


def test_not_ready_is_503(http, rt):
    rt.state, rt.reason = "loading", "loading model"
    wire, _ = seal_request({"prompt": "hi"}, rt.public_key)
    assert http.post("/v1/sealed/generate", json=wire).status_code == 503
    assert http.get("/attestation?nonce=" + "ab" * 32).status_code == 503


@pytest.mark.parametrize("nonce", ["zz" * 32, "ab" * 8 + "a", "ab" * 15, "ab" * 65, ""])
def test_attestation_refuses_a_bad_nonce(http, nonce):
    r = http.get(f"/attestation?nonce={nonce}")
    assert r.status_code == 400 and "nonce" in r.get_json()["error"]


def test_attestation_relays_node2_and_names_its_failure(http):
    body = http.get("/attestation?nonce=" + "cd" * 32).get_json()
    assert body["node1"]["nonce"] == "cd" * 32
    assert body["node1"]["model"] == {"model_id": "tiny", "version": 3, "layers": [0, 2]}
    assert body["node2"] == {"error": "node2 unreachable"}
    assert body["node1_verdict_on_node2"] == {"ok": True}


def test_policy_is_served_byte_for_byte(http, rt):
    r = http.get("/policy")
    assert r.status_code == 200 and r.data == (rt.config.tee.data_dir / "policy.json").read_bytes()


def test_a_sealed_generation_without_its_key_inside_is_401_in_openais_shape(http, rt):
    wire, _ = seal_request({"prompt": "hi"}, rt.public_key)
    r = http.post("/v1/sealed/generate", json=wire, headers={"Authorization": f"Bearer {rt.api_key}"})
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "invalid_api_key"
    wire, _ = seal_request({"prompt": "hi", "api_key": rt.api_key + "x"}, rt.public_key)
    assert http.post("/v1/sealed/generate", json=wire).status_code == 401
