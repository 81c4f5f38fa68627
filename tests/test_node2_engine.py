"""node2's sessions (Petals-style step checks) and sampling, on a small random Llama."""
import pytest
import torch
from safetensors.torch import load_file

from node2.engine import Engine
from node2 import engine as engine_module
from node2.sampling import argmax, argmax_rows, generator, sample, session_seed
from shared.config import ModelSettings
from shared.sampling import SamplingParams
from shared.spec import ModelSpec
from shared.weights import build_part, shard_keys

A, B = "a" * 32, "b" * 32


@pytest.fixture
def engine(tiny_llama_dir):
    import json

    spec = ModelSpec.from_config(json.loads((tiny_llama_dir / "config.json").read_text()))
    sd = load_file(tiny_llama_dir / "model.safetensors")
    sd = {k: sd[k] for k in shard_keys("node2", spec, 1)}
    settings = ModelSettings(max_input_tokens=16, max_new_tokens=16)
    return Engine(build_part("node2", spec, 1, sd, torch.float32, 32), settings, max_sessions=2)


def step(engine, entries, opens=None, close=()):
    hidden = torch.randn(sum(e["n"] for e in entries), 64)
    return engine.step(entries, hidden, opens or {}, list(close))


def test_prefill_then_decode(engine):
    res, ids, errors = step(engine, [{"id": A, "step": 0, "pos": 0, "n": 3}], {A: {"capacity": 5}})
    assert res == [{"id": A, "step": 0, "ok": True}] and errors == {} and 0 <= ids[0] < 49152
    res, _, errors = step(engine, [{"id": A, "step": 1, "pos": 3, "n": 1}])
    assert res[0]["ok"] and engine.sessions[A].cache.length == 4


@pytest.mark.parametrize("entry, message", [
    ({"id": A, "step": 2, "pos": 3, "n": 1}, "expected step 1"),
    ({"id": A, "step": 1, "pos": 2, "n": 1}, "position 2"),
    ({"id": A, "step": 1, "pos": 3, "n": 3}, "capacity 5"),
    ({"id": B, "step": 1, "pos": 3, "n": 1}, "unknown"),
])
def test_out_of_order_steps_are_refused_and_session_dropped(engine, entry, message):
    step(engine, [{"id": A, "step": 0, "pos": 0, "n": 3}], {A: {"capacity": 5}})
    res, _, errors = step(engine, [entry])
    assert not res[0]["ok"] and message in errors[entry["id"]]
    assert entry["id"] not in engine.sessions


def test_a_refused_session_does_not_disturb_the_others(engine):
    step(engine, [{"id": A, "step": 0, "pos": 0, "n": 2}], {A: {"capacity": 4}})
    res, _, errors = step(engine, [{"id": B, "step": 3, "pos": 0, "n": 2}, {"id": A, "step": 1, "pos": 2, "n": 1}])
    assert [r["ok"] for r in res] == [False, True] and set(errors) == {B}


def test_close_frees_and_limits_hold(engine):
    step(engine, [{"id": A, "step": 0, "pos": 0, "n": 1}], {A: {"capacity": 4}})
    step(engine, [{"id": B, "step": 0, "pos": 0, "n": 1}], {B: {"capacity": 4}})
    _, _, errors = step(engine, [{"id": "c" * 32, "step": 0, "pos": 0, "n": 1}], {"c" * 32: {"capacity": 4}})
    assert "limit of 2 sessions" in errors["c" * 32]
    step(engine, [], close=[A, B])
    assert engine.sessions == {} and engine.kv_bytes() == 0
    _, _, errors = step(engine, [{"id": A, "step": 0, "pos": 0, "n": 1}], {A: {"capacity": 999}})
    assert "capacity must be" in errors[A]


def test_sampling_greedy_seeded_and_top_p():
    logits = torch.tensor([0.0, 3.0, 1.0, 2.9])
    assert sample(logits, SamplingParams(), 0, 5) == 1
    s = SamplingParams(temperature=1.0, seed=7)
    assert len({sample(logits, s, 7, 5) for _ in range(5)}) == 1  # same seed and position, same draw
    tight = SamplingParams(temperature=1.0, top_p=0.01, seed=3)
    assert {sample(logits, tight, 3, pos) for pos in range(20)} == {1}


@pytest.mark.parametrize("values", [[0.5, 2.0, 2.0, -1.0], [1.0, float("nan"), 3.0, float("nan")],
                                    [float("-inf")] * 3, [float("inf"), 1.0, float("inf")]])
def test_the_greedy_token_is_torchs_argmax_ties_and_nans_included(values):
    logits = torch.tensor(values)
    assert argmax(logits) == int(torch.argmax(logits))


def test_the_greedy_token_of_a_batch_row_is_its_first_largest():
    wide = torch.randn(2, 49152)  # a row of a batch's [B, V] logits, as the engine passes it
    wide[1, 7], wide[1, 40000] = 1e9, 1e9
    assert argmax(wide[1]) == int(torch.argmax(wide[1])) == 7


def test_a_batch_of_greedy_rows_is_picked_as_each_row_alone():
    rows = [[0.5, 2.0, 2.0, -1.0], [1.0, float("nan"), 3.0, float("nan")], [float("-inf")] * 4,
            [float("inf"), 1.0, float("inf"), 0.0], [3.0, 1.0, 2.0, 3.0]]
    logits = torch.tensor(rows)
    assert argmax_rows(logits) == [argmax(row) for row in logits] == [1, 1, 0, 0, 0]
    assert argmax_rows(torch.randn(0, 4)) == []


def test_greedy_and_sampled_sessions_in_one_step_each_get_their_own_token(engine):
    # One step batching two greedy sessions around a seeded one: each gets the token it gets alone.
    sessions = [("a" * 32, {}), ("b" * 32, {"temperature": 1.0, "seed": 5}), ("c" * 32, {})]
    torch.manual_seed(0)
    hiddens = [torch.randn(3, engine.part.spec.hidden) * 4 for _ in sessions]
    alone = []
    for (sid, params), hidden in zip(sessions, hiddens):
        _, (tok,), _ = Engine(engine.part, engine.settings).step(
            [{"id": sid, "step": 0, "pos": 0, "n": 3}], hidden, {sid: {"capacity": 8, **params}}, [])
        alone.append(tok)
    entries = [{"id": sid, "step": 0, "pos": 0, "n": 3} for sid, _ in sessions]
    batched = Engine(engine.part, engine.settings, max_sessions=len(sessions))
    _, toks, errors = batched.step(entries, torch.cat(hiddens), {sid: {"capacity": 8, **p} for sid, p in sessions}, [])
    assert not errors and toks == alone and alone[0] != alone[2]


def test_a_seeded_draw_depends_on_seed_and_position_only():
    # Issue 13: a replayed step must draw what the lost node2 drew at that position, however many
    # draws came before it; so no stateful generator.
    logits, s = torch.zeros(1000), SamplingParams(temperature=1.0, seed=11)
    along = [sample(logits, s, 11, pos) for pos in range(40)]
    assert [sample(logits, s, 11, pos) for pos in reversed(range(40))] == along[::-1]
    assert len(set(along)) > 30  # positions give different draws, not one stream restarted
    assert along != [sample(logits, s, 12, pos) for pos in range(40)]
    assert generator(11, 3).initial_seed() != generator(3, 11).initial_seed()


def test_a_session_without_a_seed_keeps_one_random_seed():
    assert session_seed(SamplingParams(temperature=1.0, seed=5)) == 5
    assert session_seed(SamplingParams(temperature=1.0)) != session_seed(SamplingParams(temperature=1.0))


@pytest.mark.parametrize("temperature", [1e-320, 5e-324, 1e-6])
def test_tiny_temperatures_are_greedy_not_an_overflow(temperature):
    # Issue 12: 1e-320 passed the range check and node2's softmax produced nan.
    s = SamplingParams(temperature=temperature, seed=1)
    assert s.greedy and sample(torch.tensor([0.0, 3.0, 1.0]), s, 1, 0) == 1


def test_one_sequence_that_cannot_be_sampled_ends_alone(engine, monkeypatch):
    real = engine_module.sample

    def poisoned(logits, s, seed, position):  # what a sampler bug or non-finite logits would raise
        if s.seed == 13:
            raise RuntimeError("invalid multinomial distribution")
        return real(logits, s, seed, position)

    monkeypatch.setattr(engine_module, "sample", poisoned)
    opens = {A: {"capacity": 4, "temperature": 1.0, "seed": 13}, B: {"capacity": 4}}
    results, ids, errors = step(engine, [{"id": A, "step": 0, "pos": 0, "n": 2}, {"id": B, "step": 0, "pos": 0, "n": 2}], opens)
    assert [r["ok"] for r in results] == [False, True] and "sampling failed" in errors[A]
    assert A not in engine.sessions and engine.sessions[B].next_step == 1


def test_a_batch_that_fails_is_rerun_one_sequence_at_a_time(engine, monkeypatch):
    real_forward, calls = engine._forward, []

    def flaky(hidden, live, errors):
        calls.append(len(live))
        if len(live) > 1 or live[0][0]["id"] == A:  # the batch fails, and A fails alone too
            raise RuntimeError("kernel failure")
        return real_forward(hidden, live, errors)

    monkeypatch.setattr(engine, "_forward", flaky)
    opens = {A: {"capacity": 4}, B: {"capacity": 4}}
    results, _, errors = step(engine, [{"id": A, "step": 0, "pos": 0, "n": 1}, {"id": B, "step": 0, "pos": 0, "n": 3}], opens)
    assert calls == [2, 1, 1] and [r["ok"] for r in results] == [False, True]
    assert "could not compute" in errors[A] and engine.sessions[B].cache.length == 3


def test_a_new_node1_process_frees_the_previous_ones_sessions_at_once(engine):
    # Issue 13: after node1 was killed, node2 kept its sessions until the 300 s idle timeout.
    first, second = "1" * 32, "2" * 32
    hidden = torch.randn(2, 64)
    engine.step([{"id": A, "step": 0, "pos": 0, "n": 2}], hidden, {A: {"capacity": 4}}, [], instance=first)
    assert set(engine.sessions) == {A}
    engine.step([{"id": B, "step": 0, "pos": 0, "n": 2}], hidden, {B: {"capacity": 4}}, [], instance=second)
    assert set(engine.sessions) == {B} and engine.sessions[B].owner == second
    engine.step([], torch.empty(0), {}, [], instance=second)  # the same process again frees nothing
    assert set(engine.sessions) == {B}


@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "seed": 9}], ids=["greedy", "seeded"])
def test_a_replay_in_its_original_segments_rebuilds_the_session_exactly(engine, sampling):
    # Issue 13: node1 replays a session into a restarted node2 as one frame whose segments are the
    # session's original steps (prefill, then one token each): the cache and the next draw must be
    # bit-identical to the lost session's, positions included (Petals shipped bugs there).
    rows = torch.randn(8, 64)
    opens = {A: {"capacity": 10, **sampling}}
    engine.step([{"id": A, "step": 0, "pos": 0, "n": 5}], rows[:5], opens, [])
    for i, pos in enumerate(range(5, 8), start=1):
        _, (lost_token,), errors = engine.step([{"id": A, "step": i, "pos": pos, "n": 1}], rows[pos : pos + 1], {}, [])
        assert errors == {}
    original = engine.sessions.pop(A)
    _, ids, errors = engine.step([{"id": B, "step": 0, "pos": 0, "n": 8, "segments": [5, 1, 1, 1]}], rows,
                                 {B: {"capacity": 10, **sampling}}, [])
    replayed = engine.sessions[B]
    assert errors == {} and ids == [lost_token] and replayed.cache.length == 8 and replayed.next_step == 1
    assert torch.equal(replayed.cache.k[:, :, :8], original.cache.k[:, :, :8])
    assert torch.equal(replayed.cache.v[:, :, :8], original.cache.v[:, :, :8])
    # The next step continues at position 8 and draws what the original session would have.
    engine.sessions[A] = original
    _, (a_tok, b_tok), _ = engine.step([{"id": A, "step": 4, "pos": 8, "n": 1}, {"id": B, "step": 1, "pos": 8, "n": 1}],
                                       torch.cat([rows[7:8], rows[7:8]]), {}, [])
    assert a_tok == b_tok
