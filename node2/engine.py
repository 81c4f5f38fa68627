"""node2's engine: its layers, the final norm and head, sampling, and one KV cache per session.

Sessions follow Petals' inference sessions: each step names its session, step number and start
position, and a step that does not continue its session's cache exactly is refused.
"""
import logging
import threading
import time
from dataclasses import dataclass, field

import torch

from node2.sampling import argmax_rows, logprobs, sample, session_seed
from shared import memory, model, wire
from shared.config import ModelSettings
from shared.kv import CacheOverflow, SessionCache
from shared.sampling import SamplingError, SamplingParams

log = logging.getLogger("twintee.node2")


class StepError(ValueError):
    """A step cannot be applied to its session (unknown, out of order, overflow, bad params)."""


@dataclass
class Session:
    cache: SessionCache
    sampling: SamplingParams
    seed: int  # what its draws are derived from, with each token's position
    next_step: int = 0
    touched: float = field(default_factory=time.monotonic)
    owner: str | None = None  # the node1 process that opened it


class Engine:
    def __init__(self, part: model.Part, settings: ModelSettings, *, max_sessions: int = 64, idle_s: float = 300.0):
        self.part, self.settings = part, settings
        self.max_sessions, self.idle_s = max_sessions, idle_s
        self.sessions: dict[str, Session] = {}
        self.instance: str | None = None  # the node1 process whose frames arrive now
        self.lock = threading.Lock()

    def kv_bytes(self) -> int:
        return sum(s.cache.nbytes for s in list(self.sessions.values()))

    def step(self, entries: list[dict], hidden: torch.Tensor, opens: dict, close: list[str], observe=None,
             alone: bool = False, instance: str | None = None):
        """-> (results [{id, step, ok}], token ids (0 where not ok), errors {id: message}).

        `observe(seconds)` receives the step's compute time, without the wait for another channel's step.
        """
        with self.lock:
            had = bool(self.sessions)
            self._adopt(instance)
            for sid in close:
                self.sessions.pop(sid, None)
            self._expire_idle()
            if had and not self.sessions:
                memory.trim()  # the last session left: its cache and activations go back to the OS
            live, errors, row, spans = [], {}, 0, []
            for e in entries:
                try:
                    live.append((e, self._session_for(e, opens.get(e["id"]))))
                    spans.append((row, row + e["n"]))
                except StepError as err:
                    errors[e["id"]] = str(err)
                    self.sessions.pop(e["id"], None)
                row += e["n"]
            if live and errors:  # drop the rows of refused sessions; the others still run
                hidden = hidden[torch.cat([torch.arange(a, b) for a, b in spans])]
            t0 = time.perf_counter()
            self.settings.use_threads_for(hidden.shape[0], alone)
            tokens = self._forward_isolated(hidden, live, errors) if live else {}
            if live and observe:
                observe(time.perf_counter() - t0)
        results = [{"id": e["id"], "step": e["step"], "ok": e["id"] in tokens} for e in entries]
        return results, [tokens.get(e["id"], 0) for e in entries], errors

    def _session_for(self, e: dict, params: dict | None) -> Session:
        sid = e["id"]
        if e["step"] == 0:
            if sid in self.sessions or params is None:
                raise StepError("step 0 must open a new session with its parameters")
            self.sessions[sid] = self._open(params)
            self.sessions[sid].owner = self.instance
        sess = self.sessions.get(sid)
        if sess is None:
            raise StepError(wire.SESSION_LOST)
        if e["step"] != sess.next_step:
            raise StepError(f"expected step {sess.next_step}, got {e['step']}")
        try:
            sess.cache.check_room(e["pos"], e["n"])
        except CacheOverflow as err:
            raise StepError(str(err)) from None
        return sess

    def _open(self, params: dict) -> Session:
        if len(self.sessions) >= self.max_sessions:
            raise StepError(f"node2 is at its limit of {self.max_sessions} sessions")
        capacity = params.get("capacity")
        if not isinstance(capacity, int) or not 0 < capacity <= self.settings.max_positions:
            raise StepError(f"capacity must be an integer in [1, {self.settings.max_positions}]")
        try:
            sampling = SamplingParams.from_dict(params)
        except SamplingError as err:
            raise StepError(str(err)) from None
        cache = SessionCache(self.part.spec, len(self.part.layers), capacity, self.part.dtype, self.settings.device)
        return Session(cache, sampling, session_seed(sampling))

    def _forward_isolated(self, hidden: torch.Tensor, live: list, errors: dict) -> dict[str, int]:
        """One sequence's failure ends that sequence only: if the batch fails, each sequence runs
        alone (rows are batch-invariant, so the survivors' tokens are the ones the batch would have
        given; a failed attempt wrote only cache slots the retry overwrites)."""
        try:
            return self._forward(hidden, live, errors)
        except Exception:  # noqa: BLE001 - isolate, then report per sequence
            log.warning("a batch of %d sequences failed; running them one by one", len(live))
        out, row = {}, 0
        for e, sess in live:
            rows, row = hidden[row : row + e["n"]], row + e["n"]
            try:
                out.update(self._forward(rows, [(e, sess)], errors))
            except Exception as exc:  # noqa: BLE001 - this sequence alone fails
                log.warning("session %s failed: %s", e["id"][:8], type(exc).__name__)
                errors[e["id"]] = "node2 could not compute this sequence"
                self.sessions.pop(e["id"], None)
        return out

    def _forward(self, hidden: torch.Tensor, live: list, errors: dict) -> dict[str, int]:
        # hidden: [N, D] rows of the live sessions, in order
        seqs = [seq for e, sess in live for seq in model.segments(sess.cache, e["pos"], wire.segments_of(e))]
        y = model.run_layers(self.part, hidden.to(self.part.dtype), seqs)
        if len(live) < y.shape[0]:  # some sequence brought several tokens: keep each one's last row
            y = y[torch.cumsum(torch.tensor([e["n"] for e, _ in live]), 0) - 1]
        logits = model.logits(self.part, y)  # [B, V]
        # Every greedy row's pick in one scan: per row, each small tensor op costs more than its work.
        picks = argmax_rows(logits) if any(sess.sampling.greedy for _, sess in live) else None
        out = {}
        for i, (e, sess) in enumerate(live):
            try:
                out[e["id"]] = token = (picks[i] if sess.sampling.greedy else
                                        sample(logits[i], sess.sampling, sess.seed, e["pos"] + e["n"]))
                if sess.sampling.logprobs is not None:  # only the sessions that asked pay for a top-k
                    out[e["id"]] = wire.SampledToken(token, *logprobs(logits[i], token, sess.sampling.logprobs))
            except RuntimeError as exc:  # e.g. non-finite logits: this session ends, the others go on
                log.warning("session %s could not be sampled: %s", e["id"][:8], type(exc).__name__)
                errors[e["id"]] = "sampling failed for this sequence"
                self.sessions.pop(e["id"], None)
                continue
            sess.next_step += 1
            sess.touched = time.monotonic()
        return out

    def _adopt(self, instance: str | None) -> None:
        # A frame from another node1 process means the one before it is gone (restarted or crashed):
        # its sessions can never continue, so they are freed now rather than after the idle timeout.
        if instance is None or instance == self.instance:
            return
        stale = [sid for sid, s in self.sessions.items() if s.owner != instance]
        for sid in stale:
            del self.sessions[sid]
        if stale:
            log.info("a new node1 process: freed %d sessions of the previous one", len(stale))
        self.instance = instance

    def _expire_idle(self) -> None:
        # node1 closes every session it opens; this only frees caches a crashed node1 left behind.
        cutoff = time.monotonic() - self.idle_s
        for sid in [sid for sid, s in self.sessions.items() if s.touched < cutoff]:
            del self.sessions[sid]
