"""POST /generate body parsing: every refusal names the field and its limit."""
import pytest

from node1.request import BadRequest, parse_generate


def test_prompt_becomes_one_user_message_with_defaults():
    req = parse_generate({"prompt": "hi"}, 1024)
    assert req.messages == ({"role": "user", "content": "hi"},)
    s = req.sampling
    assert (req.max_tokens, s.temperature, s.top_p, s.seed, req.stop, req.stream) == (256, 0.0, 1.0, None, (), False)


def test_messages_are_kept_in_order():
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert parse_generate({"messages": msgs, "stop": "\n"}, 1024).stop == ("\n",)


@pytest.mark.parametrize("body, names", [
    ([1, 2], "JSON object"),
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
    ({"messages": [{"role": "user"}]}, "content"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 5000}, "1024"),
    ({"prompt": "x", "max_tokens": "9"}, "max_tokens"),
    ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ({"prompt": "x", "temperature": 9}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "stop": [""]}, "stop"),
    ({"prompt": "x", "stop": ["a"] * 9}, "stop"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
])
def test_bad_requests_name_the_problem(body, names):
    with pytest.raises(BadRequest, match=names):
        parse_generate(body, 1024)
