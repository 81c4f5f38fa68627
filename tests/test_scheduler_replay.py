"""node1's scheduler when node2 dies mid-generation (issue 13): it waits for node2, replays each live
session into the new one and the streams go on with exactly the tokens of an uninterrupted run.

node2 is a real Engine in process behind a link that can "die" (raise like an unreachable node2 and
come back as a fresh engine with no sessions), both halves on the tiny random Llama of conftest.
"""
import json
import queue

import pytest
import torch
from safetensors.torch import load_file

from node1.link import LinkError
from node1.scheduler import Finished, Generation, GenerationFailed, Scheduler
from node2.engine import Engine
from shared import wire
from shared.config import ModelSettings
from shared.spec import ModelSpec
from shared.weights import build_part, shard_keys

SETTINGS = ModelSettings(max_input_tokens=32, max_new_tokens=32)
PROMPT = [5, 17, 230, 4001, 88, 9, 12]


@pytest.fixture(scope="module")
def parts(tiny_llama_dir):
    spec = ModelSpec.from_config(json.loads((tiny_llama_dir / "config.json").read_text()))

    def part(role):
        sd = load_file(tiny_llama_dir / "model.safetensors")
        return build_part(role, spec, 2, {k: sd[k] for k in shard_keys(role, spec, 2)}, torch.float32, 64)

    return part("node1"), part("node2")


class DyingLink:
    """node2 in process. `die_at`: the exchanges (counted from 1) at which node2 dies before answering;
    it then refuses `down_polls` reconnects and comes back as a new engine without the old sessions."""

    def __init__(self, node2_part, die_at=(), down_polls=2, restart_silently_at=()):
        self.part, self.die_at, self.down_polls = node2_part, set(die_at), down_polls
        self.restart_silently_at = set(restart_silently_at)  # node2 restarts between steps, unnoticed
        self.engine, self.calls, self.down, self.entries = self._fresh(), 0, 0, []

    def _fresh(self) -> Engine:
        return Engine(self.part, SETTINGS)

    def exchange(self, header: dict, body: bytes):
        self.calls += 1
        if self.calls in self.restart_silently_at:
            self.engine = self._fresh()
        if self.calls in self.die_at:
            self.engine, self.down = self._fresh(), self.down_polls
            raise LinkError("node2 unreachable")
        entries, hidden, opens, close = wire.parse_step(header, body)
        self.entries.append(entries)
        results, ids, errors = self.engine.step(entries, hidden, opens, close, instance=wire.step_instance(header))
        return wire.tokens_message(results, ids, errors)

    def connect(self) -> bool:
        if self.down:
            self.down -= 1
            return False
        return True


def run(parts, link, sampling=None, max_tokens=12, recovery_s=30.0, n=1):
    sched = Scheduler(parts[0], SETTINGS, link, recovery_s=recovery_s).start()
    gens = [sched.submit(Generation(PROMPT, max_tokens, sampling or {}, frozenset())) for _ in range(n)]
    try:
        return [drain(g) for g in gens]
    finally:
        sched.stop()


def drain(gen: Generation) -> tuple[list[int], object]:
    tokens = []
    while True:
        item = gen.out.get(timeout=60)
        if isinstance(item, (Finished, GenerationFailed)):
            return tokens, item
        tokens += item


SAMPLINGS = [pytest.param({}, id="greedy"), pytest.param({"temperature": 1.0, "seed": 42}, id="seeded")]


@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("die_at", [1, 2, 6])  # during the prefill, at the first decode, mid-stream
def test_node2_dying_mid_stream_changes_no_token(parts, sampling, die_at):
    [(reference, done)] = run(parts, DyingLink(parts[1]), sampling)
    assert isinstance(done, Finished) and len(reference) == 12
    link = DyingLink(parts[1], die_at=[die_at])
    [(tokens, done)] = run(parts, link, sampling)
    assert tokens == reference and isinstance(done, Finished)
    # The replay frame reopens the session from position 0 in its original steps; the next continues
    # right after it (Petals shipped bugs in the replacement session's positions).
    generated = die_at - 1
    replay = link.entries[die_at - 1][0]
    assert (replay["step"], replay["pos"], replay["n"]) == (0, 0, len(PROMPT) + generated)
    assert wire.segments_of(replay) == [len(PROMPT)] + [1] * generated
    after = link.entries[die_at][0]
    assert (after["step"], after["pos"], after["n"]) == (1, len(PROMPT) + generated, 1)


def test_node2_restarting_between_two_steps_is_replayed_too(parts):
    # The restarted node2 answers, but no longer holds the session: node1 replays it.
    [(reference, _)] = run(parts, DyingLink(parts[1]))
    [(tokens, done)] = run(parts, DyingLink(parts[1], restart_silently_at=[4]))
    assert tokens == reference and isinstance(done, Finished)


def test_a_batch_of_sessions_is_replayed_together(parts):
    sampling = {"temperature": 0.8, "seed": 7}
    reference = run(parts, DyingLink(parts[1]), sampling, n=3)
    assert run(parts, DyingLink(parts[1], die_at=[4]), sampling, n=3) == reference


def test_node2_not_back_within_the_deadline_fails_with_a_clear_error(parts):
    link = DyingLink(parts[1], die_at=[3], down_polls=10**6)
    [(tokens, done)] = run(parts, link, recovery_s=1.0)
    assert isinstance(done, GenerationFailed) and "not back within 1 s" in str(done) and done.status == 503
    assert len(tokens) == 2


def test_a_step_failing_after_every_replay_gives_up(parts):
    link = DyingLink(parts[1], die_at=range(2, 100), down_polls=0)
    [(tokens, done)] = run(parts, link)
    assert isinstance(done, GenerationFailed) and "gave up after 3 replays" in str(done) and len(tokens) == 1


def test_a_client_leaving_while_node2_is_down_frees_its_slot(parts):
    link = DyingLink(parts[1], die_at=[3], down_polls=10**6)
    sched = Scheduler(parts[0], SETTINGS, link, recovery_s=60.0).start()
    released = queue.Queue()
    gen = Generation(PROMPT, 12, {}, frozenset(), on_done=lambda: released.put(True))
    sched.submit(gen)
    try:
        assert [gen.out.get(timeout=30) for _ in range(2)]  # two tokens, then node2 dies
        gen.cancel()
        assert released.get(timeout=5) and sched.batch_size == 0
    finally:
        sched.stop()
