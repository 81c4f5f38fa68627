"""node2/app.py and node2/step.py in-process: health states, handshake refusals, and sealed steps
through create_app(config, runtime=fake) with a real SealedChannel pair."""
import os
import time

import pytest
import torch

from attestation.errors import AttestationError
from node2.runtime import PeerChannel
from shared import wire
from shared.channel import SealedChannel
from shared.handshake import ChannelKeys

SESSION = "a1" * 16
INSTANCE = "b2" * 16


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def channel_keys() -> ChannelKeys:
    return ChannelKeys(os.urandom(16), os.urandom(32), os.urandom(32), {"ok": True}, time.time())


@pytest.fixture()
def clock():
    return Clock()


@pytest.fixture()
def node1(node2_runtime, clock) -> SealedChannel:
    """node1's end of a channel node2 already holds (as after a handshake); node2's end ages on `clock`."""
    keys = channel_keys()
    node2_end = SealedChannel(keys, "responder", max_age_s=60, clock=clock)
    node2_runtime.channels[node2_end.channel_id] = PeerChannel(node2_end)
    return SealedChannel(keys, "initiator")


def step_frame(node1: SealedChannel, n: int = 3, close=(), **header_extra) -> bytes:
    entries = [{"id": SESSION, "step": 0, "pos": 0, "n": n}] if n else []
    opens = {SESSION: {"capacity": 16, "temperature": 0.0}} if n else {}
    header, body = wire.step_message(entries, torch.arange(n * 8, dtype=torch.float32).reshape(n, 8), opens,
                                     list(close), instance=INSTANCE)
    return node1.seal({**header, **header_extra}, body)


def post(client, frame: bytes):
    return client.post("/v1/step", data=frame, content_type=wire.CONTENT_TYPE)


def rejected(rt, reason: str) -> float:
    return rt.metrics.registry.get_sample_value("twintee_frames_rejected_total", {"reason": reason}) or 0.0


# --- /health ---------------------------------------------------------------------------------

def test_health_is_ok_only_when_ready(node2_client, node1):
    r = node2_client.get("/health")
    body = r.get_json()
    assert r.status_code == 200 and body["status"] == "ok"
    assert body["layers"] == [2, 4] and body["sessions"] == 0 and body["channels"] == [node1.channel_id]
    assert body["measurement"] == "ab" * 32 and body["tee"] == "simulated" and "compute" in body


@pytest.mark.parametrize("state, reason", [("loading", "waiting for the key broker"), ("failed", "ManifestError: x")])
def test_health_is_503_naming_the_state_and_reason(node2_client, node2_runtime, state, reason):
    node2_runtime.state, node2_runtime.reason = state, reason
    r = node2_client.get("/health")
    assert r.status_code == 503 and r.get_json()["status"] == state and r.get_json()["reason"] == reason
    assert "channels" not in r.get_json()


# --- handshake -------------------------------------------------------------------------------

def test_a_finished_handshake_holds_a_channel_health_names(node2_client, node2_runtime):
    keys = channel_keys()
    node2_runtime.responder.keys = keys
    assert node2_client.post("/v1/handshake/hello", json={"m1": 1}).get_json() == {"m2": {"m1": 1}}
    assert node2_client.post("/v1/handshake/finish", json={"m3": 3}).get_json() == {"m4": {"m3": 3}}
    assert node2_client.get("/health").get_json()["channels"] == [keys.channel_id.hex()]
    assert node2_runtime.peer["verified"] is True


@pytest.mark.parametrize("path", ["/v1/handshake/hello", "/v1/handshake/finish"])
@pytest.mark.parametrize("check, status", [("measurement", 403), ("signature", 403), ("busy", 503)])
def test_handshake_refusals_map_to_403_or_503_when_busy(node2_client, node2_runtime, path, check, status):
    node2_runtime.responder.refusal = AttestationError(check, "refused by the test")
    r = node2_client.post(path, json={"m": 1})
    assert r.status_code == status and check in r.get_json()["error"]
    assert node2_runtime.channels == {}


def test_a_refused_finish_is_what_health_reports(node2_client, node2_runtime):
    node2_runtime.responder.refusal = AttestationError("measurement", "node1's code differs")
    node2_client.post("/v1/handshake/finish", json={"m3": 3})
    assert node2_client.get("/health").get_json()["peer"]["failed"] == "measurement"


def test_handshake_before_ready_is_503(node2_client, node2_runtime):
    node2_runtime.state, node2_runtime.reason = "loading", "loading model"
    r = node2_client.post("/v1/handshake/hello", json={"m1": 1})
    assert r.status_code == 503 and "loading model" in r.get_json()["error"]


# --- /v1/step --------------------------------------------------------------------------------

def test_a_good_step_round_trips_under_the_channel(node2_client, node2_runtime, node1):
    r = post(node2_client, step_frame(node1, n=3, close=["c3" * 16]))
    assert r.status_code == 200 and r.mimetype == wire.CONTENT_TYPE
    header, plain = node1.open(r.data)
    assert wire.parse_tokens(header, plain) == ([{"id": SESSION, "step": 0, "ok": True}], [7], {})
    (step,) = node2_runtime.engine.steps
    assert step["entries"] == [{"id": SESSION, "step": 0, "pos": 0, "n": 3}] and step["close"] == ["c3" * 16]
    assert torch.equal(step["hidden"], torch.arange(24, dtype=torch.float32).reshape(3, 8))
    assert step["opens"] == {SESSION: {"capacity": 16, "temperature": 0.0}} and step["instance"] == INSTANCE
    assert node2_runtime.metrics.registry.get_sample_value("twintee_tokens_generated_total") == 1


def test_a_refused_session_comes_back_not_ok_with_its_error(node2_client, node2_runtime, node1):
    node2_runtime.engine.errors = {SESSION: "step 0 of an unknown session"}
    header, plain = node1.open(post(node2_client, step_frame(node1)).data)
    assert wire.parse_tokens(header, plain) == ([{"id": SESSION, "step": 0, "ok": False}], [0],
                                                {SESSION: "step 0 of an unknown session"})


def test_an_empty_frame_computes_nothing_and_a_close_only_frame_reaches_the_engine(node2_client, node2_runtime, node1):
    header, plain = node1.open(post(node2_client, step_frame(node1, n=0)).data)
    assert wire.parse_tokens(header, plain) == ([], [], {}) and node2_runtime.engine.steps == []
    node1.open(post(node2_client, step_frame(node1, n=0, close=[SESSION])).data)
    assert [s["close"] for s in node2_runtime.engine.steps] == [[SESSION]]


def test_each_frame_header_is_decoded_once(node2_client, node1, monkeypatch):
    calls = []
    decode = wire.decode_frame
    monkeypatch.setattr(wire, "decode_frame", lambda frame: calls.append(1) or decode(frame))
    assert post(node2_client, step_frame(node1)).status_code == 200
    assert len(calls) == 1


def test_an_unknown_channel_is_409(node2_client, node2_runtime):
    stranger = SealedChannel(channel_keys(), "initiator")
    r = post(node2_client, step_frame(stranger))
    assert r.status_code == 409 and "no such channel" in r.get_json()["error"]
    assert node2_runtime.engine.steps == []


def test_an_expired_channel_is_409_and_applies_nothing(node2_client, node2_runtime, node1, clock):
    clock.now += 61
    r = post(node2_client, step_frame(node1))
    assert r.status_code == 409 and "channel expired" in r.get_json()["error"]
    assert node2_runtime.engine.steps == [] and rejected(node2_runtime, "malformed") == 0


@pytest.mark.parametrize("frame", [b"", b"XXXX\x00\x00\x00\x02{}", b"TT01\xff\xff\xff\xff{}"])
def test_bytes_that_are_no_frame_are_400(node2_client, node2_runtime, frame):
    r = post(node2_client, frame)
    assert r.status_code == 400 and r.get_json()["error"].startswith("frame rejected")
    assert node2_runtime.engine.steps == []


def flip_last_byte(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 1])


def test_a_tampered_frame_is_400_and_counted_by_reason(node2_client, node2_runtime, node1):
    r = post(node2_client, flip_last_byte(step_frame(node1)))
    assert r.status_code == 400 and "tag" in r.get_json()["error"]
    assert rejected(node2_runtime, "tag") == 1 and node2_runtime.engine.steps == []


def test_a_replayed_frame_is_400_and_counted(node2_client, node2_runtime, node1):
    frame = step_frame(node1)
    assert post(node2_client, frame).status_code == 200
    r = post(node2_client, frame)
    assert r.status_code == 400 and rejected(node2_runtime, "replay") == 1
    assert len(node2_runtime.engine.steps) == 1


@pytest.mark.parametrize("header_extra, message", [
    ({"type": "tokens"}, "expected a step frame"),
    ({"instance": "not hex"}, "instance must be"),
    ({"shape": [2, 8]}, "dtype or shape differs"),
])
def test_a_frame_that_opens_but_is_no_valid_step_is_400_counted_as_malformed(node2_client, node2_runtime, node1,
                                                                            header_extra, message):
    r = post(node2_client, step_frame(node1, **header_extra))
    assert r.status_code == 400 and message in r.get_json()["error"]
    assert rejected(node2_runtime, "malformed") == 1 and node2_runtime.engine.steps == []


def test_step_before_ready_is_503(node2_client, node2_runtime, node1):
    node2_runtime.state, node2_runtime.reason = "loading", "loading model"
    assert post(node2_client, step_frame(node1)).status_code == 503


def test_attestation_binds_the_nonce_and_names_what_node2_serves(node2_client):
    body = node2_client.get("/attestation?nonce=" + "cd" * 32).get_json()
    assert body["nonce"] == "cd" * 32 and body["model"] == {"model_id": "tiny", "version": 3, "layers": [2, 4]}
    assert node2_client.get("/attestation?nonce=zz").status_code == 400
