"""Continuous batching on node1: every step runs all live sessions through node1's layers at once,
sends node2 one frame for the whole batch, and hands each session its next token.

New requests join between steps; finished or cancelled ones leave at once and their node2
sessions are closed in the next frame.

When node2 does not answer a step (it died, restarted, or lost the channel), the batch is not
failed: the scheduler waits for node2 up to `recovery_s`, then replays each session into it (its
prompt and every token generated so far, as one frame whose segments are the session's original
steps, so every row is recomputed exactly and the next token is the one the lost node2 would
have drawn), and the streams go on.
"""
import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from shared import memory, model, wire
from shared.config import ModelSettings
from shared.kv import SessionCache

log = logging.getLogger("twintee.node1")
MAX_REPLAYS = 3  # per generation: a step that fails again after as many replays is not node2's restart
RECOVERY_POLL_S = 0.5
# A reply read only at its end gets its tokens this many at a time (the first at once). Handing out each
# token woke the request's thread every step, and on a machine whose cores a step's threads fill, that
# thread took a core from them mid-step: 0.5 ms of a 9.9 ms q4_1 step, measured on both nodes' step times.
REPLY_CHUNK_TOKENS = 16


class GenerationFailed(RuntimeError):
    """The pipeline could not finish a generation; the message is safe to show the client."""

    status = 502  # node2 refused or failed the step


class Node2Unavailable(GenerationFailed):
    """node2 was not back within the recovery deadline: try again later."""

    status = 503


@dataclass
class Finished:
    reason: str  # "stop" | "length"


@dataclass
class Generation:
    """One request's session: prompt ids in, token ids out through `out`, in lists of up to `chunk`
    (1 for a stream, which shows each token as it comes; REPLY_CHUNK_TOKENS for a reply read whole)."""

    prompt: list[int]
    max_tokens: int
    sampling: dict
    stop_ids: frozenset
    chunk: int = 1
    id: str = field(default_factory=lambda: secrets.token_hex(16))
    out: queue.Queue = field(default_factory=queue.Queue)  # list[int] | Finished | GenerationFailed
    cancelled: threading.Event = field(default_factory=threading.Event)
    cache: SessionCache | None = None
    tokens: list[int] = field(default_factory=list)  # generated so far
    handed: int = 0  # how many of them are in `out`
    fed: int = 0  # positions held by both nodes' caches for this session
    node2_step: int = 0  # steps node2's session has taken (0: the next frame opens it)
    replays: int = 0
    on_done: Callable[[], None] | None = None  # node1's capacity slot, given back when it retires

    def next_input(self) -> tuple[list[int], list[int]]:
        """(token ids to run, the step lengths they are computed in): the prompt, the last token, or
        after a replay everything so far in its original steps (the prompt, then one token each)."""
        if self.fed == 0:
            return self.prompt + self.tokens, [len(self.prompt)] + [1] * len(self.tokens)
        return self.tokens[-1:], [1]

    def cancel(self) -> None:
        self.cancelled.set()

    def hand_out(self, upto: int) -> None:
        """Puts tokens [handed, upto) in `out` as one list."""
        if upto > self.handed:
            self.out.put(self.tokens[self.handed : upto])
            self.handed = upto

    def done(self) -> None:
        """Gives back node1's capacity slot, once, whatever ended the generation."""
        if self.on_done is not None:
            self.on_done, on_done = None, self.on_done
            on_done()


class InFlight:
    """How many of node1's pipeline slots have a step in flight (node1's layers through node2's reply).

    A step that starts with no other in flight has the machine to itself: node1 and node2 take
    turns on it, so each may use every core (measured on a 2-core Xeon: a single stream's lean step
    62 -> 41 ms with two threads per node). With two in flight both nodes compute at once and each
    keeps its decode share.
    """

    def __init__(self):
        self.lock, self.count = threading.Lock(), 0

    def __enter__(self) -> bool:
        with self.lock:
            self.count += 1
            return self.count == 1  # alone

    def __exit__(self, *exc) -> None:
        with self.lock:
            self.count -= 1


class Scheduler:
    def __init__(self, part: model.Part, settings: ModelSettings, link, metrics=None, in_flight: InFlight | None = None,
                 instance: str | None = None, recovery_s: float = 60.0):
        self.part, self.settings, self.link, self.metrics = part, settings, link, metrics
        self.recovery_s = recovery_s  # how long a batch waits for node2 to come back before failing
        self.in_flight = in_flight or InFlight()
        self.instance = instance  # this node1 process, named in every frame to node2
        self.waiting: queue.Queue[Generation] = queue.Queue()
        self.active: list[Generation] = []
        self.closing: list[str] = []
        self.wake = threading.Event()
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> "Scheduler":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()

    def submit(self, gen: Generation) -> Generation:
        self.waiting.put(gen)
        self.wake.set()
        return gen

    @property
    def batch_size(self) -> int:
        return len(self.active)

    @property
    def kv_bytes(self) -> int:
        caches = [g.cache for g in list(self.active)]  # read once: the scheduler may retire one meanwhile
        return sum(c.nbytes for c in caches if c is not None)

    @property
    def idle(self) -> bool:
        """Nothing to compute and every close already sent to node2."""
        return not self.active and not self.closing and self.waiting.empty()

    def end_all(self, failure: GenerationFailed) -> int:
        """Ends every generation it holds with `failure` (shutdown past its deadline): each request's
        thread reads it as its next item, and the loop retires them and closes their node2 sessions."""
        gens = [*list(self.active), *list(self.waiting.queue)]
        for gen in gens:
            gen.out.put(failure)
            gen.cancel()
        self.wake.set()
        return len(gens)

    @property
    def load(self) -> int:
        return len(self.active) + self.waiting.qsize()

    def _loop(self) -> None:
        while not self.stopped:
            self._admit()
            self._drop_cancelled()
            if not self.active:
                if self.closing:
                    self._send_closes()
                    memory.trim()  # the last session left: its caches go back to the OS
                self.wake.wait(timeout=1.0)
                self.wake.clear()
                continue
            batch = list(self.active)
            try:
                self._step(batch)
            except Exception:  # noqa: BLE001 - a bug fails this batch, never the loop every stream waits on
                log.exception("a step of %d sessions failed inside node1", len(batch))
                for g in batch:
                    if g in self.active:
                        self._retire(g, GenerationFailed("node1 could not compute this step"))

    def _admit(self) -> None:
        while len(self.active) < self.settings.max_batch:
            try:
                gen = self.waiting.get_nowait()
            except queue.Empty:
                return
            if gen.cancelled.is_set():
                gen.done()
                continue
            capacity = len(gen.prompt) + gen.max_tokens
            gen.cache = SessionCache(self.part.spec, len(self.part.layers), capacity, self.part.dtype, self.settings.device)
            self.active.append(gen)

    def _drop_cancelled(self) -> None:
        for gen in [g for g in self.active if g.cancelled.is_set()]:
            self._retire(gen)

    def _retire(self, gen: Generation, item=None) -> None:
        if isinstance(item, Finished):  # every token the consumer has not had yet, bar a stop token
            gen.hand_out(len(gen.tokens) - (item.reason == "stop"))
        self.active.remove(gen)
        gen.cache = None
        gen.done()  # before the last item: a client answered at once may come back, and find its slot free
        if item is not None:
            gen.out.put(item)
        if gen.node2_step > 0 or item is not None:
            self.closing.append(gen.id)

    def _inputs(self, batch: list[Generation]):
        entries, opens, ids, seqs = [], {}, [], []
        for g in batch:
            new, lengths = g.next_input()
            entry = {"id": g.id, "step": g.node2_step, "pos": g.fed, "n": len(new)}
            if len(lengths) > 1:
                entry["segments"] = lengths
            entries.append(entry)
            if g.node2_step == 0:
                opens[g.id] = {"capacity": len(g.prompt) + g.max_tokens, **g.sampling}
            ids += new
            seqs += model.segments(g.cache, g.fed, lengths)
        return entries, opens, torch.tensor(ids, device=self.settings.device), seqs

    def _step(self, batch: list[Generation]) -> None:
        t0 = time.perf_counter()
        entries, opens, ids, seqs = self._inputs(batch)
        with self.in_flight as alone:
            self.settings.use_threads_for(len(ids), alone)
            hidden = model.run_layers(self.part, model.embed(self.part, ids), seqs)  # [N, D]
            header, body = wire.step_message(entries, hidden.cpu(), opens, self.closing, alone=alone,
                                             instance=self.instance)
            closing, self.closing = self.closing, []
            try:
                results, tokens, errors = wire.parse_tokens(*self.link.exchange(header, body))
            except Exception as exc:  # noqa: BLE001 - any link failure: wait for node2, then replay
                self.closing = closing + self.closing  # the closes may not have arrived either
                self._recover(batch, getattr(exc, "public_message", "node2 did not answer the step"))
                return
        for g, e, r, tok in zip(batch, entries, results, tokens):
            self._deliver(g, e, r, tok, errors)
        if self.metrics:
            self._observe(len(batch), time.perf_counter() - t0)

    def _observe(self, batch: int, seconds: float) -> None:
        m = self.metrics
        m.step_seconds.observe(seconds)
        m.tokens.inc(batch)
        m.tokens_per_sec.set(batch / seconds)

    def _deliver(self, g: Generation, e: dict, r: dict, tok: int, errors: dict) -> None:
        if r.get("id") == g.id and not r.get("ok") and errors.get(g.id) == wire.SESSION_LOST:
            self._replay(g, "node2 no longer holds the session")  # it restarted between two steps
            return
        if r.get("id") != g.id or not r.get("ok"):
            self._retire(g, GenerationFailed(f"node2 refused the step: {errors.get(g.id, 'mismatched reply')}"))
            return
        g.fed += e["n"]
        g.node2_step += 1
        g.tokens.append(tok)
        if tok in g.stop_ids:
            self._retire(g, Finished("stop"))
        elif len(g.tokens) >= g.max_tokens:
            self._retire(g, Finished("length"))
        elif g.handed == 0 or len(g.tokens) - g.handed >= g.chunk:  # the first token at once: time to first token
            g.hand_out(len(g.tokens))

    def _recover(self, batch: list[Generation], message: str) -> None:
        """node2 did not answer a step: wait for a channel to it (node2 restarting loads for seconds),
        then replay each of the batch's sessions; past the deadline each fails with a clear error."""
        log.warning("a step of %d sessions failed (%s); waiting up to %.0f s for node2", len(batch), message,
                    self.recovery_s)
        deadline = time.monotonic() + self.recovery_s
        while not self.link.connect():
            for g in [g for g in batch if g.cancelled.is_set()]:
                batch.remove(g)
                self._retire(g)
            if not batch or self.stopped or time.monotonic() >= deadline:
                for g in batch:
                    self._retire(g, Node2Unavailable(f"{message}; node2 was not back within {self.recovery_s:.0f} s"))
                return
            time.sleep(RECOVERY_POLL_S)
        for g in batch:
            self._replay(g, message)

    def _replay(self, g: Generation, why: str) -> None:
        """Makes the next step reopen g's session at node2 with everything so far. Its node1 cache is
        rewritten too, in the same steps, so the hidden rows node2 receives are the original ones."""
        if g.replays >= MAX_REPLAYS:
            self._retire(g, GenerationFailed(f"{why}; gave up after {MAX_REPLAYS} replays"))
            return
        if g.node2_step > 0:
            self.closing.append(g.id)  # the old session, in case that node2 still holds it
        g.replays += 1
        g.id, g.fed, g.node2_step = secrets.token_hex(16), 0, 0
        g.cache.length = 0
        if self.metrics:
            self.metrics.replays.inc()
        log.info("replaying a session into node2: %d prompt + %d generated tokens", len(g.prompt), len(g.tokens))

    def _send_closes(self) -> None:
        header, body = wire.step_message([], torch.empty(0, 0), {}, self.closing, instance=self.instance)
        self.closing = []
        try:
            self.link.exchange(header, body)
        except Exception:  # noqa: BLE001 - node2 frees idle sessions itself if this is lost
            pass
