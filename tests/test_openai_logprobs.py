"""Per-token logprobs for the OpenAI API: node2/sampling.logprobs over the row a token was drawn from,
and the tokens frame carrying them (shared/wire.py) only for the sessions that asked."""
import json

import pytest
import torch
from safetensors.torch import save as st_save

from node2.sampling import logprobs, sample
from shared import wire
from shared.sampling import SamplingError, SamplingParams

A, B = "a" * 32, "b" * 32


def test_the_chosen_tokens_logprob_and_its_top_k_from_the_same_logits():
    logits = torch.tensor([1.0, 3.0, 2.0, -50.0])
    token = sample(logits, SamplingParams(), 0, 4)
    lp, top = logprobs(logits, token, 3)
    expected = torch.log_softmax(logits, -1)
    assert token == 1 and lp == pytest.approx(float(expected[1])) and lp == max(v for _, v in top)
    assert [i for i, _ in top] == [1, 2, 0] and logprobs(logits, token, 0)[1] == []


def test_logprobs_do_not_change_the_draw():
    s = SamplingParams(temperature=0.9, seed=7, logprobs=2)
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0))
    drawn = [sample(logits, s, 7, pos) for pos in range(5)]
    with_lp = []
    for pos in range(5):
        t = sample(logits, s, 7, pos)
        logprobs(logits, t, 2)
        with_lp.append(t)
    assert drawn == with_lp


def test_sampling_params_validate_logprobs():
    assert SamplingParams.from_dict(SamplingParams(logprobs=3).to_dict()).logprobs == 3
    for bad in (-1, 6, True, 1.5):
        with pytest.raises(SamplingError, match="logprobs"):
            SamplingParams(logprobs=bad)


def test_tokens_frame_carries_logprobs_only_for_sessions_that_asked():
    results = [{"id": A, "step": 0, "ok": True}, {"id": B, "step": 0, "ok": True}]
    header, body = wire.tokens_message(results, [wire.SampledToken(7, -0.25, [(7, -0.25), (9, -3.0)]), 8], {})
    _, ids, _ = wire.parse_tokens(header, body)
    assert ids == [7, 8] and ids[0].logprob == -0.25 and ids[0].top == ((7, -0.25), (9, -3.0))
    assert not isinstance(ids[1], wire.SampledToken)
    _, plain_body = wire.tokens_message(results, [7, 8], {})
    assert b"logprobs" not in plain_body  # a frame with none is as it was before logprobs


@pytest.mark.parametrize("value", [{"c" * 32: [-1.0, []]}, {A: [0.5, []]}, {A: [-1.0, [[1, -1.0]] * 6]},
                                   {A: [-1.0, [[-1, -1.0]]]}, {A: "x"}, [1]])
def test_malformed_logprobs_from_the_peer_are_refused(value):
    header, _ = wire.tokens_message([{"id": A, "step": 0, "ok": True}], [7], {})
    body = st_save({"ids": torch.tensor([7])}, metadata={"errors": "{}", "logprobs": json.dumps(value)})
    with pytest.raises(wire.WireError):
        wire.parse_tokens(header, body)
