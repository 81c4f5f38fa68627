"""The wire format: frames, canonical headers, step and token messages, and refusals of malformed input."""
import json
import struct

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from shared import wire

SID = "ab" * 16


def test_frame_round_trip_keeps_raw_header():
    frame = wire.encode_frame({"b": 1, "a": [1, 2]}, b"\x00body")
    header, raw, body = wire.decode_frame(frame)
    assert header == {"a": [1, 2], "b": 1} and raw == b'{"a":[1,2],"b":1}' and body == b"\x00body"


DEEP = b"[" * 60000


@pytest.mark.parametrize("frame", [b"", b"XX01\x00\x00\x00\x02{}", b"TT01\xff\xff\xff\xff{}", b"TT01\x00\x00\x00\x03{ }x",
                                   b"TT01" + len(DEEP).to_bytes(4, "big") + DEEP])
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
        wire.read_payload(b"\x80\x04\x95pickle", "hidden", wire.HIDDEN_DTYPES)


@pytest.mark.parametrize("tensor, meta", [(torch.randn(3, 8), {"open": "{}"}), (torch.randn(1, 576).bfloat16(), {"open": '{"x": 1}'}),
                                          (torch.zeros(0, 0), {"open": "{}"}), (torch.randn(2, 4).half(), {"z": "1", "a": "\u00e9\\"})])
def test_frames_carry_the_bytes_the_safetensors_library_writes_and_reads(tensor, meta):
    ours = wire.safetensors_bytes("hidden", wire.SAFETENSORS_DTYPES[tensor.dtype], list(tensor.shape),
                                  tensor.contiguous().view(torch.uint8).numpy().tobytes(), meta)
    if len(meta) == 1:  # the library writes several in its hash map's order
        assert ours == st_save({"hidden": tensor}, metadata=meta)
    assert torch.equal(st_load(ours)["hidden"], tensor)
    payload = wire.read_payload(ours, "hidden", wire.HIDDEN_DTYPES)
    assert torch.equal(wire.payload_tensor(payload), tensor) and payload.metadata == meta


def test_a_tokens_body_is_the_librarys_bytes_too():
    _, body = wire.tokens_message([{"id": SID, "step": 1, "ok": True}, {"id": "cd" * 16, "step": 0, "ok": False}],
                                  [42, 0], {"cd" * 16: "refused"})
    assert body == st_save({"ids": torch.tensor([42, 0])}, metadata={"errors": '{"' + "cd" * 16 + '": "refused"}'})


def _payload(head: dict, data: bytes = b"\0" * 16) -> bytes:
    raw = json.dumps(head).encode()
    return struct.pack("<Q", len(raw)) + raw + data


GOOD = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


@pytest.mark.parametrize("body", [
    b"\x01", struct.pack("<Q", 10**6) + b"{}", struct.pack("<Q", 2) + b"{x", _payload([GOOD]),
    _payload({}), _payload({"other": GOOD}), _payload({"hidden": GOOD, "more": GOOD}),
    _payload({"hidden": {**GOOD, "dtype": "I64"}}), _payload({"hidden": {**GOOD, "dtype": "F64"}}),
    _payload({"hidden": {**GOOD, "shape": [2, 3]}}), _payload({"hidden": {**GOOD, "shape": [2, -2]}}),
    _payload({"hidden": {**GOOD, "shape": [True, 4]}}), _payload({"hidden": {**GOOD, "shape": "2x2"}}),
    _payload({"hidden": {**GOOD, "data_offsets": [8, 24]}}), _payload({"hidden": GOOD}, b"\0" * 15),
    _payload({"hidden": {**GOOD, "extra": 1}}), _payload({"hidden": GOOD, "__metadata__": {"open": 1}}),
    _payload({"hidden": GOOD, "__metadata__": ["open"]}), _payload({"hidden": None}),
    _payload({"hidden": {**GOOD, "dtype": ["F32"]}}), struct.pack("<Q", len(DEEP)) + DEEP, struct.pack("<Q", 2) + b"\xff\xfe"])
def test_malformed_tensor_payloads_are_refused(body):
    with pytest.raises(wire.WireError):
        wire.read_payload(body, "hidden", wire.HIDDEN_DTYPES)


def test_tokens_round_trip():
    header, body = wire.tokens_message([{"id": SID, "step": 1, "ok": True}], [42], {})
    assert wire.parse_tokens(header, body) == ([{"id": SID, "step": 1, "ok": True}], [42], {})


@pytest.mark.parametrize("errors", ["[]", '"refused"', "[" * 60_000, "{"])
def test_a_tokens_frame_whose_errors_are_not_an_object_is_refused(errors):
    header, _ = wire.tokens_message([{"id": SID, "step": 1, "ok": True}], [42], {})
    body = wire.safetensors_bytes("ids", "I64", [1], struct.pack("<q", 42), {"errors": errors})
    with pytest.raises(wire.WireError, match="errors metadata"):  # a list reached the scheduler's .get before
        wire.parse_tokens(header, body)


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
