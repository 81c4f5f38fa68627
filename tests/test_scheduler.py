"""node1/scheduler.py in-process: node1's layers of the tiny random Llama, a fake link standing in for
node2 (no HTTP, no node2 process), driven only through the public interface (submit, Generation.out,
cancel, on_done). The link's frames are read back with node2's own checks (wire.parse_step)."""
import json
import queue
import threading

import pytest
import torch
from safetensors.torch import load_file

from node1.link import LinkError
from node1.scheduler import Finished, Generation, GenerationFailed, Scheduler
from node2.engine import Engine
from shared import model, wire
from shared.config import ModelSettings
from shared.kv import SessionCache
from shared.spec import ModelSpec
from shared.weights import build_part, shard_keys

SPLIT = 2
GREEDY = {"temperature": 0.0, "top_p": 1.0, "seed": None}
WAIT_S = 30.0  # a deadline for a stuck test only; no step comes near it


def part_of(tiny_llama_dir, role: str) -> model.Part:
    spec = ModelSpec.from_config(json.loads((tiny_llama_dir / "config.json").read_text()))
    sd = load_file(tiny_llama_dir / "model.safetensors")
    return build_part(role, spec, SPLIT, {k: sd[k] for k in shard_keys(role, spec, SPLIT)}, torch.float32, 64)


@pytest.fixture(scope="module")
def node1_part(tiny_llama_dir) -> model.Part:
    return part_of(tiny_llama_dir, "node1")


class FakeLink:
    """node2 as the scheduler sees it: exchange(step header, body) -> (tokens header, body).

    Records every frame as node2 would parse it; answers each session with 100 + its step unless
    `answer` says otherwise; `hold()` keeps the next exchange waiting until the test releases it.
    """

    def __init__(self):
        self.frames: list[dict] = []
        self.changed = threading.Condition()
        self.gate: threading.Event | None = None
        self.fail: Exception | None = None
        self.reachable = True  # what connect() says while the scheduler waits for node2 after a failure
        self.answer = lambda frame: ([{"id": e["id"], "step": e["step"], "ok": True} for e in frame["entries"]],
                                     [100 + e["step"] for e in frame["entries"]], {})

    def exchange(self, header: dict, body: bytes) -> tuple[dict, bytes]:
        entries, hidden, opens, close = wire.parse_step(header, body)
        frame = {"entries": entries, "hidden": hidden, "opens": opens, "close": close, "alone": header["alone"]}
        gate = self.gate
        with self.changed:
            self.frames.append(frame)
            self.changed.notify_all()
        if gate is not None:
            assert gate.wait(WAIT_S), "the test never released the held step"
        if self.fail is not None:
            raise self.fail
        return wire.tokens_message(*self.answer(frame))

    def connect(self) -> bool:
        return self.reachable

    def hold(self) -> threading.Event:
        self.gate = threading.Event()
        return self.gate

    def release(self) -> None:
        gate, self.gate = self.gate, None
        gate.set()

    def wait_frames(self, n: int) -> list[dict]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.frames) >= n, WAIT_S), f"{len(self.frames)} of {n} frames"
            return list(self.frames)


def scheduler_with(part: model.Part, link, max_batch: int = 16, recovery_s: float = 60.0) -> Scheduler:
    settings = ModelSettings(threads=1, prefill_threads=1, max_input_tokens=16, max_new_tokens=16, max_batch=max_batch)
    return Scheduler(part, settings, link, recovery_s=recovery_s).start()


@pytest.fixture()
def link():
    return FakeLink()


@pytest.fixture()
def sched(node1_part, link):
    s = scheduler_with(node1_part, link)
    yield s
    s.stop()


def generation(prompt=(5, 6, 7), max_tokens=3, stop=(2,)) -> Generation:
    gen = Generation(list(prompt), max_tokens, dict(GREEDY), frozenset(stop))
    gen.returned = 0

    def on_done():
        gen.returned += 1
    gen.on_done = on_done
    return gen


def drain(gen: Generation) -> list:
    """Every token the generation receives, then its Finished or GenerationFailed."""
    items = []
    while True:
        item = gen.out.get(timeout=WAIT_S)
        if not isinstance(item, list):
            return items + [item]
        items += item


def pending(gen: Generation) -> list:
    items = []
    while True:
        try:
            items.append(gen.out.get_nowait())
        except queue.Empty:
            return [x for item in items for x in (item if isinstance(item, list) else [item])]


def test_a_generation_prefills_then_steps_one_token_at_a_time_and_is_closed_after(sched, link):
    gen = sched.submit(generation(max_tokens=3))
    assert drain(gen) == [100, 101, 102, Finished("length")]
    frames = link.wait_frames(4)
    assert [f["entries"] for f in frames[:3]] == [[{"id": gen.id, "step": 0, "pos": 0, "n": 3}],
                                                  [{"id": gen.id, "step": 1, "pos": 3, "n": 1}],
                                                  [{"id": gen.id, "step": 2, "pos": 4, "n": 1}]]
    assert frames[0]["opens"] == {gen.id: {"capacity": 6, **GREEDY}} and frames[1]["opens"] == {}
    assert frames[3]["entries"] == [] and frames[3]["close"] == [gen.id]  # the close-only frame when idle
    assert gen.returned == 1 and sched.batch_size == 0 and sched.kv_bytes == 0


def raw_items(gen: Generation, n: int) -> list:
    return [gen.out.get(timeout=WAIT_S) for _ in range(n)]


def test_a_reply_read_whole_gets_its_first_token_at_once_then_the_rest_in_chunks(sched, link):
    gen = generation(max_tokens=10)
    gen.chunk = 4
    sched.submit(gen)
    assert raw_items(gen, 5) == [[100], [101, 102, 103, 104], [105, 106, 107, 108], [109], Finished("length")]


def test_a_stop_token_mid_chunk_hands_out_the_tokens_before_it_and_not_itself(sched, link):
    link.answer = lambda f: ([{"id": e["id"], "step": e["step"], "ok": True} for e in f["entries"]],
                             [2 if e["step"] == 3 else 100 + e["step"] for e in f["entries"]], {})
    gen = generation(max_tokens=10)
    gen.chunk = 4
    sched.submit(gen)
    assert raw_items(gen, 3) == [[100], [101, 102], Finished("stop")]


def test_the_hidden_states_sent_are_node1_s_layers_over_the_session_s_cache(sched, link, node1_part):
    gen = sched.submit(generation(max_tokens=2))
    drain(gen)
    frames = link.wait_frames(2)

    def fresh(ids: list[int]) -> torch.Tensor:
        cache = SessionCache(node1_part.spec, len(node1_part.layers), 8, torch.float32)
        return model.run_layers(node1_part, model.embed(node1_part, torch.tensor(ids)), [model.Seq(cache, 0, len(ids))])

    assert torch.equal(frames[0]["hidden"], fresh([5, 6, 7]))  # [3, D]
    # The decode step continues the cache: its row is the last row of a prefill of prompt + token.
    torch.testing.assert_close(frames[1]["hidden"], fresh([5, 6, 7, 100])[-1:], rtol=1e-5, atol=1e-5)


def test_a_stop_token_ends_the_generation_unsent_and_closes_it(sched, link):
    link.answer = lambda f: ([{"id": e["id"], "step": e["step"], "ok": True} for e in f["entries"]],
                             [2 if e["step"] == 1 else 100 for e in f["entries"]], {})
    gen = sched.submit(generation(max_tokens=8))
    assert drain(gen) == [100, Finished("stop")]
    assert link.wait_frames(3)[2]["close"] == [gen.id] and gen.returned == 1


def test_requests_join_between_steps_up_to_the_batch_limit_and_closes_ride_the_next_step(node1_part, link):
    sched = scheduler_with(node1_part, link, max_batch=2)
    try:
        link.hold()
        a = sched.submit(generation(max_tokens=2))
        link.wait_frames(1)
        assert sched.batch_size == 1 and sched.kv_bytes > 0
        b, c = sched.submit(generation(max_tokens=2)), sched.submit(generation(max_tokens=2))
        assert sched.load == 3
        link.release()
        assert [drain(g)[-1] for g in (a, b, c)] == [Finished("length")] * 3
        frames = link.wait_frames(5)
        steps = [[(e["id"], e["step"]) for e in f["entries"]] for f in frames]
        assert steps[:4] == [[(a.id, 0)], [(a.id, 1), (b.id, 0)], [(b.id, 1), (c.id, 0)], [(c.id, 1)]]
        assert [f["close"] for f in frames[:5]] == [[], [], [a.id], [b.id], [c.id]]
    finally:
        sched.stop()


def test_a_generation_cancelled_in_flight_leaves_the_batch_and_is_closed(sched, link):
    link.hold()
    a = sched.submit(generation(max_tokens=8))
    link.wait_frames(1)
    b = sched.submit(generation(max_tokens=2))
    a.cancel()
    link.release()
    assert drain(b) == [100, 101, Finished("length")]
    frames = link.wait_frames(3)
    assert [e["id"] for e in frames[1]["entries"]] == [b.id] and frames[1]["close"] == [a.id]
    assert pending(a) == [100] and a.returned == 1  # the token of the step it was in, then nothing


def test_a_generation_cancelled_before_it_starts_never_reaches_node2(sched, link):
    link.hold()
    a = sched.submit(generation(max_tokens=2))
    link.wait_frames(1)
    b = sched.submit(generation(max_tokens=2))
    b.cancel()
    link.release()
    drain(a)
    frames = link.wait_frames(3)  # a's two steps and its close
    assert b.id not in json.dumps([(f["entries"], f["close"]) for f in frames])
    assert b.returned == 1 and pending(b) == []


@pytest.mark.parametrize("bad_result, error, message", [
    (lambda e: {"id": "f" * 32, "step": e["step"], "ok": True}, None, "node2 refused the step: mismatched reply"),
    (lambda e: {"id": e["id"], "step": e["step"], "ok": False}, "expected step 0, got 1",
     "node2 refused the step: expected step 0, got 1"),
])
def test_a_mismatched_or_refused_reply_fails_only_its_own_sequence(sched, link, bad_result, error, message):
    link.hold()
    a = sched.submit(generation(max_tokens=3))
    link.wait_frames(1)
    b = sched.submit(generation(max_tokens=3))

    def answer(frame):
        results = [bad_result(e) if e["id"] == b.id else {"id": e["id"], "step": e["step"], "ok": True}
                   for e in frame["entries"]]
        return results, [100 + e["step"] for e in frame["entries"]], {b.id: error} if error else {}
    link.answer = answer
    link.release()
    failed = drain(b)
    assert isinstance(failed[-1], GenerationFailed) and str(failed[-1]) == message and failed[:-1] == []
    assert drain(a) == [100, 101, 102, Finished("length")]
    assert b.id in link.wait_frames(3)[2]["close"] and a.returned == b.returned == 1


def test_a_link_failure_with_node2_gone_past_the_deadline_fails_with_the_link_s_public_message(node1_part, link):
    # Within the deadline node1 replays the session into a node2 that came back (tests/test_scheduler_replay.py).
    link.fail, link.reachable = LinkError("node2 unreachable"), False
    sched = scheduler_with(node1_part, link, recovery_s=1.0)
    try:
        gen = sched.submit(generation())
        (failed,) = drain(gen)
    finally:
        sched.stop()
    assert isinstance(failed, GenerationFailed) and failed.status == 503 and gen.returned == 1
    assert str(failed) == "node2 unreachable; node2 was not back within 1 s"


def test_through_node2_s_engine_the_split_gives_the_unsplit_model_s_greedy_tokens(node1_part, tiny_llama_dir):
    """The whole pipeline in one process: node1's scheduler, node2's engine behind the link, two
    generations batched together, each token for token what transformers gives the unsplit model."""
    from transformers import LlamaForCausalLM

    settings = ModelSettings(threads=1, prefill_threads=1, max_input_tokens=16, max_new_tokens=16)
    engine = Engine(part_of(tiny_llama_dir, "node2"), settings)

    class EngineLink:
        def exchange(self, header, body):
            return wire.tokens_message(*engine.step(*wire.parse_step(header, body)))

    sched = Scheduler(node1_part, settings, EngineLink()).start()
    try:
        prompts = [[1, 306, 4658, 278], [1, 1724, 338]]
        gens = [sched.submit(generation(p, max_tokens=6, stop=())) for p in prompts]
        got = [drain(g)[:-1] for g in gens]
    finally:
        sched.stop()
    reference = LlamaForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        want = [reference.generate(torch.tensor([p]), max_new_tokens=6, do_sample=False, eos_token_id=None,
                                   pad_token_id=0)[0, len(p):].tolist() for p in prompts]
    assert got == want
