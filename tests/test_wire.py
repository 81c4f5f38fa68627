"""The wire format: frames, canonical headers, step and token messages, and refusals of malformed input."""
import pytest
import torch

from shared import wire

SID = "ab" * 16


def test_frame_round_trip_keeps_raw_header():
    frame = wire.encode_frame({"b": 1, "a": [1, 2]}, b"\x00body")
    header, raw, body = wire.decode_frame(frame)
    assert header == {"a": [1, 2], "b": 1} and raw == b'{"a":[1,2],"b":1}' and body == b"\x00body"


@pytest.mark.parametrize("frame", [b"", b"XX01\x00\x00\x00\x02{}", b"TT01\xff\xff\xff\xff{}", b"TT01\x00\x00\x00\x03{ }x"])
def test_malformed_frames_are_refused(frame):
    with pytest.raises(wire.WireError):
        wire.decode_frame(frame)


def test_step_message_round_trip():
    hidden = torch.randn(5, 8)
    entries = [{"id": SID, "step": 0, "pos": 0, "n": 4}, {"id": "cd" * 16, "step": 3, "pos": 9, "n": 1}]
    header, body = wire.step_message(entries, hidden, {SID: {"capacity": 10}}, ["ef" * 16])
    got_entries, got_hidden, opens, close = wire.parse_step(header, body)
    assert got_entries == entries and torch.equal(got_hidden, hidden)
    assert opens == {SID: {"capacity": 10}} and close == ["ef" * 16]
    assert header["dtype"] == "float32" and header["shape"] == [5, 8]


def test_step_header_must_match_tensor():
    header, body = wire.step_message([{"id": SID, "step": 0, "pos": 0, "n": 2}], torch.randn(2, 4), {}, [])
    with pytest.raises(wire.WireError, match="dtype or shape"):
        wire.parse_step({**header, "shape": [2, 5]}, body)
    with pytest.raises(wire.WireError, match="add up"):
        wire.parse_step({**header, "sessions": [{"id": SID, "step": 0, "pos": 0, "n": 3}]}, body)


@pytest.mark.parametrize("entry", [{"id": "x", "step": 0, "pos": 0, "n": 1}, {"id": SID, "step": -1, "pos": 0, "n": 1},
                                   {"id": SID, "step": 0, "pos": 0, "n": 0}, {"id": SID, "step": True, "pos": 0, "n": 1}])
def test_bad_step_entries_are_refused(entry):
    header, body = wire.step_message([{"id": SID, "step": 0, "pos": 0, "n": 1}], torch.randn(1, 4), {}, [])
    with pytest.raises(wire.WireError):
        wire.parse_step({**header, "sessions": [entry]}, body)


def test_a_replay_entry_carries_its_original_steps():
    entry = {"id": SID, "step": 0, "pos": 0, "n": 4, "segments": [2, 1, 1]}
    header, body = wire.step_message([entry], torch.randn(4, 4), {}, [])
    (parsed,), *_ = wire.parse_step(header, body)
    assert wire.segments_of(parsed) == [2, 1, 1] and wire.segments_of({"n": 3}) == [3]


@pytest.mark.parametrize("segments, step, pos", [([2, 1], 0, 0), ([2, 2, 0], 0, 0), ([4, -0.5, 0.5], 0, 0),
                                                 ([1, 1, 1, True], 0, 0), ("4", 0, 0), ([], 0, 0),
                                                 ([2, 2], 1, 0), ([2, 2], 0, 3), ([1] * 5, 0, 0)])
def test_segments_that_do_not_replay_a_session_from_its_start_are_refused(segments, step, pos):
    entry = {"id": SID, "step": step, "pos": pos, "n": 4, "segments": segments}
    header, body = wire.step_message([entry], torch.randn(4, 4), {}, [])
    with pytest.raises(wire.WireError, match="segments"):
        wire.parse_step(header, body)


def test_tensor_payload_is_never_unpickled():
    with pytest.raises(wire.WireError):
        wire.bytes_to_tensors(b"\x80\x04\x95pickle")


def test_tokens_round_trip():
    header, body = wire.tokens_message([{"id": SID, "step": 1, "ok": True}], [42], {})
    assert wire.parse_tokens(header, body) == ([{"id": SID, "step": 1, "ok": True}], [42], {})


@pytest.mark.parametrize("value, alone", [(True, True), (False, False), (None, False), ("true", False), (1, False)])
def test_only_a_literal_true_alone_hint_gives_node2_every_core(value, alone):
    header, _ = wire.step_message([], torch.zeros(0, 4), {}, [], alone=True)
    header["alone"] = value
    assert wire.step_alone(header) is alone


def test_the_node1_instance_is_32_hex_or_absent():
    header, _ = wire.step_message([], torch.zeros(0, 4), {}, [], instance="ab" * 16)
    assert wire.step_instance(header) == "ab" * 16 and wire.step_instance({}) is None
    with pytest.raises(wire.WireError, match="instance"):
        wire.step_instance({"instance": "not hex"})
