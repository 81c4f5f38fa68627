"""What one step's frames cost without the network: serialize, seal, open and parse, both ways, in-process.

The same `shared.wire` and `shared.channel` code the nodes run, on a channel with random keys;
subtracting this from the stack's cross-node cost leaves what HTTP (client, gunicorn, Flask) adds.
"""
import os
import secrets
import time
from statistics import median

import torch

from shared import wire
from shared.channel import SealedChannel
from shared.handshake import ChannelKeys


def channel_pair() -> tuple[SealedChannel, SealedChannel]:
    keys = ChannelKeys(os.urandom(16), os.urandom(32), os.urandom(32), {}, time.time())
    return SealedChannel(keys, "initiator"), SealedChannel(keys, "responder")


def round_trip(node1: SealedChannel, node2: SealedChannel, hidden: torch.Tensor) -> int:
    """node1 seals a step, node2 opens and answers, node1 opens the answer -> bytes on the wire."""
    entries = [{"id": secrets.token_hex(16), "step": 1, "pos": 40, "n": 1} for _ in range(hidden.shape[0])]
    out = node1.seal(*wire.step_message(entries, hidden, {}, []))
    header, plain = node2.open(out)
    got, _, _, _ = wire.parse_step(header, plain)
    back = node2.seal(*wire.tokens_message([{"id": e["id"], "step": 1, "ok": True} for e in got], [0] * len(got), {}))
    wire.parse_tokens(*node1.open(back))
    return len(out) + len(back)


def frame_ms(hidden_size: int, dtype: torch.dtype, batch: int, reps: int = 200) -> dict:
    node1, node2 = channel_pair()
    hidden = torch.randn(batch, hidden_size).to(dtype)  # [B, D]: one decode step's hidden states
    round_trip(node1, node2, hidden)
    times, size = [], 0
    for _ in range(reps):
        t0 = time.perf_counter()
        size = round_trip(node1, node2, hidden)
        times.append(time.perf_counter() - t0)
    return {"batch": batch, "ms": median(times) * 1e3, "wire_bytes": size}
