"""The wire format between node1 and node2: one frame = routing header + body, tensors as safetensors.

A frame is `MAGIC | u32 header length | header JSON | body`. The header is canonical JSON (sorted
keys, no spaces) so that the exact bytes can serve as AEAD associated data. Tensors travel as
safetensors bytes: never pickle, never JSON float lists.
"""
import json
import math
import struct
import sys
from typing import NamedTuple

import torch
from attestation.canonical import canonical_json

MAGIC = b"TT01"
MAX_HEADER_BYTES = 64 * 1024
CONTENT_TYPE = "application/x-twintee-frame"


class WireError(ValueError):
    """A frame or tensor payload from the peer is malformed."""


class Frame(NamedTuple):
    """A decoded frame: the header, its exact bytes as sent (the AEAD associated data), the body."""

    header: dict
    raw_header: bytes
    body: bytes


def encode_frame(header: dict, body: bytes) -> bytes:
    return encode_raw_frame(canonical_json(header), body)


def encode_raw_frame(head: bytes, body: bytes) -> bytes:
    """A frame around a header already in canonical JSON (the sealer has it as associated data)."""
    return MAGIC + struct.pack(">I", len(head)) + head + body


def _json_object(raw: bytes | str, what: str) -> dict:
    """A JSON object from a frame, or WireError naming `what`. RecursionError too: brackets nested past
    the parser's depth, which a frame's header can carry before anything authenticates it. Not
    canonical.parse_json: its walk over every value would run on each step's hot path, and a frame's
    fields are each checked where they are read (the header must also be canonical)."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise WireError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise WireError(f"{what} is not an object")
    return value


def decode_frame(frame: bytes) -> Frame:
    """Checks the framing and the header's canonical form once; a receiver routes on the header and
    hands the same Frame to SealedChannel.open_decoded."""
    if len(frame) < 8 or frame[:4] != MAGIC:
        raise WireError("not a TwinTEE frame (bad magic or too short)")
    (n,) = struct.unpack(">I", frame[4:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(frame):
        raise WireError("frame header length out of range")
    raw = frame[8 : 8 + n]
    header = _json_object(raw, "frame header")
    if canonical_json(header) != raw:
        raise WireError("frame header is not canonical JSON")
    return Frame(header, raw, frame[8 + n :])


# safetensors' names for the dtypes a frame carries
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}
HIDDEN_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def safetensors_bytes(name: str, dtype: str, shape: list[int], data: bytes, metadata: dict[str, str]) -> bytes:
    """One tensor (safetensors' dtype name, its little-endian bytes) as safetensors bytes, the same
    bytes safetensors.torch.save writes for it (a test compares them; with several metadata entries
    the library's order is a hash map's, ours the caller's). Written here because the
    library's save cost ~30 us a call, ~110 us with the decode kernel's weights just streamed through
    the caches: two calls a step were a tenth of the q4_1 step's time outside its kernels."""
    entry = {"dtype": dtype, "shape": shape, "data_offsets": [0, len(data)]}
    head = json.dumps({"__metadata__": metadata, name: entry}, separators=(",", ":"),
                      ensure_ascii=False).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(head)) + head + data


def _raw(t: torch.Tensor) -> bytes:
    if sys.byteorder != "little":  # safetensors is little-endian; torch's bytes are the machine's
        raise WireError("frames are written on little-endian machines only")
    return t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""


class Payload(NamedTuple):
    """One tensor read from safetensors bytes: its torch dtype, shape, raw bytes and string metadata."""

    dtype: torch.dtype
    shape: list[int]
    data: bytes
    metadata: dict[str, str]


def read_payload(body: bytes, name: str, dtypes: dict[str, torch.dtype]) -> Payload:
    """safetensors bytes holding exactly the tensor `name`, of one of `dtypes` (safetensors' names),
    or WireError. Read here rather than by the library: one parse of the header instead of two,
    strict about everything a frame may hold, and nothing in it is ever unpickled or executed."""
    if len(body) < 8:
        raise WireError("tensor payload is too short")
    (n,) = struct.unpack("<Q", body[:8])
    if n > len(body) - 8:
        raise WireError("tensor payload's header length is out of range")
    head = _json_object(body[8 : 8 + n], "tensor payload's header")
    if set(head) - {"__metadata__"} != {name}:
        raise WireError(f"payload must hold exactly the tensor {name!r}")
    meta, entry, data = head.get("__metadata__") or {}, head[name], body[8 + n :]
    if not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise WireError("payload metadata must map names to strings")
    if not (isinstance(entry, dict) and set(entry) == {"dtype", "shape", "data_offsets"}
            and isinstance(entry["dtype"], str) and entry["dtype"] in dtypes
            and isinstance(entry["shape"], list) and all(_nonneg_int(d) for d in entry["shape"])):
        raise WireError(f"tensor {name!r} needs a dtype of {sorted(dtypes)} and a shape of non-negative integers")
    dtype = dtypes[entry["dtype"]]
    if entry["data_offsets"] != [0, len(data)] or len(data) != math.prod(entry["shape"]) * dtype.itemsize:
        raise WireError(f"tensor {name!r}'s bytes do not match its shape")
    return Payload(dtype, entry["shape"], data, meta)


def payload_tensor(p: Payload) -> torch.Tensor:
    if not p.data:
        return torch.empty(p.shape, dtype=p.dtype)
    return torch.frombuffer(bytearray(p.data), dtype=p.dtype).reshape(p.shape)  # a copy it owns, writable


# --- Messages: what node1 and node2 say to each other inside frames -------------------------
#
# step   node1 -> node2  header: sessions [{id, step, pos, n[, segments]}], close [ids], dtype, shape
#                        (segments: a replay's original step lengths, summing to n; see segments_of)
#                        body:   safetensors {"hidden": [N, D]}, metadata {"open": {id: params}}
# tokens node2 -> node1  header: sessions [{id, step, ok}]
#                        body:   safetensors {"ids": [B] int64}, metadata {"errors": {id: message},
#                                "logprobs": {id: [logprob, [[candidate id, logprob], ...]]} (only the
#                                sessions that asked for them; absent when none did)}
# Session ids are random 128-bit hex; sampling parameters ride in the (sealed) body, not the header.

MAX_SESSIONS_PER_FRAME = 256
# node2's error for a session it does not hold (it restarted, or the session expired): node1 replays it.
SESSION_LOST = "unknown or expired session"
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _is_hex_id(s) -> bool:
    return isinstance(s, str) and len(s) == 32 and all(c in "0123456789abcdef" for c in s)


def _nonneg_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def step_message(entries: list[dict], hidden: torch.Tensor, opens: dict, close: list[str],
                 alone: bool = False, instance: str | None = None) -> tuple[dict, bytes]:
    # alone: no other step is in flight, so node2 may use every core for this one (a thread count,
    # nothing more: it cannot change a result, see shared/linear.py). instance: which node1 process
    # sent it, so node2 frees a restarted node1's sessions at once (only an attested node1 can seal it).
    header = {"type": "step", "sessions": entries, "close": close, "alone": alone,
              "dtype": DTYPE_NAMES[hidden.dtype], "shape": list(hidden.shape)}
    if instance is not None:
        header["instance"] = instance
    body = safetensors_bytes("hidden", SAFETENSORS_DTYPES[hidden.dtype], list(hidden.shape), _raw(hidden),
                             {"open": json.dumps(opens)})
    return header, body


def parse_step(header: dict, body: bytes) -> tuple[list[dict], torch.Tensor, dict, list[str]]:
    """Validates a step frame from the peer; raises WireError naming what is wrong."""
    entries, close = header.get("sessions"), header.get("close", [])
    if not isinstance(entries, list) or not isinstance(close, list) or len(entries) > MAX_SESSIONS_PER_FRAME:
        raise WireError("step frame needs a list of sessions and a list of closes")
    for e in entries:
        if not (isinstance(e, dict) and _is_hex_id(e.get("id")) and all(_nonneg_int(e.get(k)) for k in ("step", "pos", "n"))):
            raise WireError("step entry needs id (32 hex), step, pos and n (non-negative integers)")
        if e["n"] == 0:
            raise WireError("step entry with no tokens")
        _check_segments(e)
    if not all(_is_hex_id(c) for c in close):
        raise WireError("close list holds a malformed session id")
    if not entries:
        return entries, torch.empty(0), {}, close
    payload = read_payload(body, "hidden", HIDDEN_DTYPES)
    hidden, meta = payload_tensor(payload), payload.metadata
    if DTYPE_NAMES.get(hidden.dtype) != header.get("dtype") or list(hidden.shape) != header.get("shape"):
        raise WireError("hidden tensor's dtype or shape differs from the header")
    if hidden.dim() != 2 or hidden.shape[0] != sum(e["n"] for e in entries):
        raise WireError("hidden tensor rows do not add up to the sessions' token counts")
    return entries, hidden, _json_object(meta.get("open", "{}"), "open metadata"), close


def _check_segments(e: dict) -> None:
    lengths = e.get("segments")
    if lengths is None:
        return
    if not (isinstance(lengths, list) and 0 < len(lengths) <= e["n"] and all(_nonneg_int(x) and x > 0 for x in lengths)
            and sum(lengths) == e["n"]):
        raise WireError("segments must be a list of positive integers summing to n")
    if e["step"] != 0 or e["pos"] != 0:
        raise WireError("segments replay a session from its start: step 0, position 0")


def segments_of(entry: dict) -> list[int]:
    """The step lengths an entry's tokens were first computed in (a replay), else one step of n."""
    return entry.get("segments") or [entry["n"]]


def step_instance(header: dict) -> str | None:
    """The sending node1 process's id (32 hex), or None if absent; anything else is malformed."""
    value = header.get("instance")
    if value is not None and not _is_hex_id(value):
        raise WireError("instance must be 32 lowercase hex characters")
    return value


def step_alone(header: dict) -> bool:
    """node1's hint that this step is the only one in flight; anything but `true` means share the cores."""
    return header.get("alone") is True


class SampledToken(int):
    """A token id as node2 drew it, carrying its logprob and top candidates [(id, logprob)] when its
    session asked for them. It is an int everywhere else, so the scheduler queues it to the
    generation unchanged and only the code that wants logprobs looks for them."""

    def __new__(cls, token: int, logprob: float, top=()):
        self = super().__new__(cls, token)
        self.logprob, self.top = logprob, tuple(top)
        return self


MAX_TOP_CANDIDATES = 5


def tokens_message(results: list[dict], ids: list[int], errors: dict[str, str]) -> tuple[dict, bytes]:
    header = {"type": "tokens", "sessions": results}
    meta = {"errors": json.dumps(errors)}
    logprobs = {r["id"]: [t.logprob, [list(c) for c in t.top]]
                for r, t in zip(results, ids) if isinstance(t, SampledToken)}
    if logprobs:  # additive: a frame without logprobs is byte-identical to what it was before them
        meta["logprobs"] = json.dumps(logprobs)
    body = safetensors_bytes("ids", "I64", [len(ids)], struct.pack(f"<{len(ids)}q", *map(int, ids)), meta)
    return header, body


def parse_tokens(header: dict, body: bytes) -> tuple[list[dict], list[int], dict[str, str]]:
    results = header.get("sessions")
    if header.get("type") != "tokens" or not isinstance(results, list):
        raise WireError("expected a tokens frame")
    payload = read_payload(body, "ids", {"I64": torch.int64})
    if len(payload.shape) != 1 or payload.shape[0] != len(results):
        raise WireError("token ids do not match the sessions in the header")
    ids, meta = list(struct.unpack(f"<{len(results)}q", payload.data)), payload.metadata
    errors = _json_object(meta.get("errors", "{}"), "errors metadata")
    return results, _with_logprobs(results, ids, meta.get("logprobs")), errors


def _with_logprobs(results: list[dict], ids: list[int], raw: str | None) -> list[int]:
    """The ids, each one whose session got logprobs as a SampledToken carrying them."""
    if raw is None:
        return ids
    logprobs = _json_object(raw, "logprobs metadata")
    index = {r.get("id"): i for i, r in enumerate(results) if isinstance(r, dict)}
    for sid, value in logprobs.items():
        if sid not in index:
            raise WireError("logprobs for a session not in the frame")
        logprob, top = _token_logprobs(value)
        ids[index[sid]] = SampledToken(ids[index[sid]], logprob, top)
    return ids


def _token_logprobs(value) -> tuple[float, list[tuple[int, float]]]:
    if not (isinstance(value, list) and len(value) == 2 and _logprob(value[0]) and isinstance(value[1], list)
            and len(value[1]) <= MAX_TOP_CANDIDATES):
        raise WireError(f"a token's logprobs must be [logprob, at most {MAX_TOP_CANDIDATES} candidates]")
    top = value[1]
    if not all(isinstance(c, list) and len(c) == 2 and _nonneg_int(c[0]) and _logprob(c[1]) for c in top):
        raise WireError("a logprob candidate must be [token id, logprob]")
    return float(value[0]), [(c[0], float(c[1])) for c in top]


def _logprob(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x <= 0
