"""node2's end of the step link (node1/link.py is the other): one sealed step frame in, node2's
layers and sampling, one sealed tokens frame out.

Each frame's header is decoded once: it names the channel, and the same decoded frame is opened.
"""
import logging
from typing import NamedTuple

import torch

from node2.runtime import Node2Runtime
from shared import wire
from shared.channel import FrameRejected, SealedChannel

log = logging.getLogger("twintee.node2")


class StepRefused(Exception):
    """A step frame node2 did not apply; `status` is the HTTP status that says why."""

    status = 400


class ChannelGone(StepRefused):
    """No such channel, or it expired: node1 handshakes again and resends (nothing was applied)."""

    status = 409


class FrameRefused(StepRefused):
    """The frame is malformed, out of order or does not open under its channel's key."""

    status = 400


class Step(NamedTuple):
    """A step frame's checked contents (shared/wire.py's step message)."""

    entries: list[dict]
    hidden: torch.Tensor
    opens: dict
    close: list[str]
    alone: bool
    instance: str | None


def run_step(rt: Node2Runtime, data: bytes) -> bytes:
    """A sealed step frame -> the sealed tokens frame that answers it, or StepRefused."""
    try:
        frame = wire.decode_frame(data)
    except wire.WireError as exc:
        raise FrameRefused(f"frame rejected: {exc}") from None
    peer = rt.channel_for(frame.header.get("ch"))
    if peer is None:
        raise ChannelGone("no such channel: handshake first")
    with peer.lock:  # one frame at a time per channel: sequence numbers must arrive in order
        if peer.chan.expired:  # checked before anything is applied: node1 re-handshakes and resends
            raise ChannelGone("channel expired: handshake first")
        step = _open_step(rt, peer.chan, frame)
        return peer.chan.seal(*wire.tokens_message(*_apply(rt, step)))


def _open_step(rt: Node2Runtime, chan: SealedChannel, frame: wire.Frame) -> Step:
    """Opens and checks a step frame; a refusal is counted by reason and logged without content."""
    try:
        header, plain = chan.open_decoded(frame)
        if header.get("type") != "step":
            raise wire.WireError("expected a step frame")
        return Step(*wire.parse_step(header, plain), wire.step_alone(header), wire.step_instance(header))
    except (FrameRejected, wire.WireError) as exc:
        rt.metrics.frames_rejected.labels(reason=getattr(exc, "reason", "malformed")).inc()
        log.warning("rejected a frame: %s", exc)
        raise FrameRefused(f"frame rejected: {exc}") from None


def _apply(rt: Node2Runtime, step: Step) -> tuple[list[dict], list[int], dict]:
    """Runs the step on the engine -> (results, token ids, errors); an empty frame computes nothing."""
    if not step.entries and not step.close:
        return [], [], {}
    results, ids, errors = rt.engine.step(step.entries, step.hidden, step.opens, step.close,
                                          observe=rt.metrics.step_seconds.observe, alone=step.alone,
                                          instance=step.instance)
    if step.entries:
        rt.metrics.batch.set(len(step.entries))
        rt.metrics.tokens.inc(sum(r["ok"] for r in results))
    return results, ids, errors
