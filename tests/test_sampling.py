"""The one definition of sampling parameters both nodes validate with (shared/sampling.py)."""
import math

import pytest

from shared.sampling import GREEDY_BELOW, MAX_TEMPERATURE, SamplingError, SamplingParams


@pytest.mark.parametrize("fields, name", [
    ({"temperature": "hot"}, "temperature"), ({"temperature": -0.1}, "temperature"),
    ({"temperature": MAX_TEMPERATURE + 0.1}, "temperature"), ({"temperature": math.nan}, "temperature"),
    ({"temperature": True}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_p": math.inf}, "top_p"),
    ({"seed": -1}, "seed"), ({"seed": 2**63}, "seed"), ({"seed": 1.5}, "seed"), ({"seed": False}, "seed"),
])
def test_out_of_range_or_mistyped_fields_are_named(fields, name):
    with pytest.raises(SamplingError, match=f"'{name}'"):
        SamplingParams.from_dict(fields)


def test_the_limits_are_the_same_wherever_they_are_checked():
    # node1's request parsing and node2's session opening both build this one class.
    from node1.request import BadRequest, parse_generate

    with pytest.raises(BadRequest, match="'temperature' must be a number in \\[0.0, 2.0\\]"):
        parse_generate({"prompt": "hi", "temperature": 3}, 1024)
    assert parse_generate({"prompt": "hi", "temperature": 2}, 1024).sampling.temperature == 2.0


def test_round_trip_and_greedy_threshold():
    s = SamplingParams(temperature=0.7, top_p=0.9, seed=4)
    assert SamplingParams.from_dict(s.to_dict()) == s and not s.greedy
    assert SamplingParams(temperature=GREEDY_BELOW / 2).greedy and SamplingParams().greedy
