"""node1/auth.py in node1's app over a fake pipeline: 401/403/429 in OpenAI's shape on /generate and
/v1/*, the open routes stay open, and each generation's ledger row equals its reply's usage."""
import pytest

from node1.app import create_app
from tests.conftest import tenant_gate
from tests.test_openai_api import MODEL, FakeRuntime

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "max_tokens": 5}


def rig(tmp_path, **policy):
    rt = FakeRuntime()
    gate, key = tenant_gate(tmp_path, rt, **policy)
    return create_app(rt.config, runtime=rt, gate=gate).test_client(), gate, {"Authorization": f"Bearer {key}"}


def openai_error(r, status: int) -> dict:
    assert r.status_code == status, r.get_data(as_text=True)
    err = r.get_json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


@pytest.mark.parametrize("method, path, body", [
    ("post", "/generate", {"prompt": "hi", "max_tokens": 2}), ("post", "/v1/chat/completions", CHAT),
    ("post", "/v1/completions", {"model": MODEL, "prompt": "hi"}), ("get", "/v1/models", None),
    ("get", "/v1/usage", None),
])
def test_no_key_a_wrong_key_and_a_revoked_key_are_401(tmp_path, method, path, body):
    http, gate, auth = rig(tmp_path)
    call = getattr(http, method)
    assert call(path, json=body, headers=auth).status_code == 200
    for headers in ({}, {"Authorization": auth["Authorization"][:-2] + "xx"}, {"Authorization": "Bearer sk-1"}):
        assert openai_error(call(path, json=body, headers=headers), 401)["code"] == "invalid_api_key"
    gate.tenants.revoke("t")
    assert "revoked" in openai_error(call(path, json=body, headers=auth), 401)["message"]


def test_the_page_health_attestation_and_description_stay_open(tmp_path):
    http, _, _ = rig(tmp_path)
    for path in ("/", "/health", "/openapi.json", "/webui/app.js", "/webui/apikey.js"):
        assert http.get(path).status_code == 200, path
    # The fake pipeline has no evidence nor policy to give: whatever these answer, the gate let them through.
    for path in ("/attestation?nonce=" + "ab" * 32, "/policy", "/v1/attestation/report?nonce=" + "ab" * 32,
                 "/v1/signature/chatcmpl-nope"):
        assert http.get(path).status_code not in (401, 403, 429), path
    assert openai_error(http.get("/v1/signature/chatcmpl-nope"), 404)["code"] == "not_found"


def test_over_the_rate_limit_is_429_with_retry_after(tmp_path):
    http, _, auth = rig(tmp_path, rpm=2)
    http.get("/v1/models", headers=auth)
    http.post("/v1/chat/completions", json=CHAT, headers=auth)
    r = http.post("/v1/chat/completions", json=CHAT, headers=auth)
    assert openai_error(r, 429)["type"] == "rate_limit_error" and 0 < int(r.headers["Retry-After"]) <= 60


@pytest.mark.parametrize("policy, longest", [({"tpm": 5}, 60), ({"tokens_per_day": 5}, 86400)])
def test_over_a_token_limit_is_429_with_retry_after(tmp_path, policy, longest):
    http, _, auth = rig(tmp_path, **policy)
    assert http.post("/v1/chat/completions", json=CHAT, headers=auth).status_code == 200  # 2 + 5 tokens
    r = http.post("/generate", json={"prompt": "hi", "max_tokens": 2}, headers=auth)
    assert openai_error(r, 429)["code"] == "rate_limit_exceeded" and 0 < int(r.headers["Retry-After"]) <= longest


def test_over_the_concurrent_limit_is_429_with_retry_after(tmp_path):
    http, _, auth = rig(tmp_path, max_concurrent=1)
    held = http.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth, buffered=False)
    assert held.status_code == 200  # its slot is taken until the stream closes
    r = http.post("/v1/chat/completions", json=CHAT, headers=auth)
    assert openai_error(r, 429)["code"] == "rate_limit_exceeded" and r.headers["Retry-After"] == "1"
    held.close()
    assert http.post("/v1/chat/completions", json=CHAT, headers=auth).status_code == 200


def test_a_model_or_max_tokens_outside_the_policy_is_403(tmp_path):
    http, _, auth = rig(tmp_path, max_tokens=4, models=("other/model",))
    assert openai_error(http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1}, headers=auth),
                        403)["param"] == "model"
    http, _, auth = rig(tmp_path / "b", max_tokens=4)
    assert openai_error(http.post("/v1/chat/completions", json=CHAT, headers=auth), 403)["param"] == "max_tokens"
    assert openai_error(http.post("/generate", json={"prompt": "hi"}, headers=auth), 403)["code"] == \
        "max_tokens_over_limit"  # /generate's default of 256
    assert "Retry-After" not in http.post("/v1/chat/completions", json=CHAT, headers=auth).headers  # no wait helps


def test_each_generation_is_one_ledger_row_equal_to_its_usage(tmp_path):
    http, gate, auth = rig(tmp_path)
    plain = http.post("/v1/chat/completions", json=CHAT, headers=auth).get_json()["usage"]
    events = http.post("/v1/completions", json={"model": MODEL, "prompt": "hey", "max_tokens": 3, "stream": True},
                       headers=auth).get_data(as_text=True)
    assert "usage" not in events  # billed without include_usage all the same
    own = http.post("/generate", json={"prompt": "hi", "max_tokens": 4}, headers=auth).get_json()["usage"]
    http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 0}, headers=auth)  # a 400: not billed
    day, = http.get("/v1/usage", headers=auth).get_json()["data"]
    assert day["requests"] == 3
    assert day["prompt_tokens"] == plain["prompt_tokens"] + 3 + own["prompt_tokens"]
    assert day["completion_tokens"] == plain["completion_tokens"] + 3 + own["completion_tokens"]
    reasons = [r[0] for r in gate.ledger.store.rows("SELECT finish_reason FROM ledger ORDER BY seq")]
    assert reasons == ["length", "length", "length"]


def test_the_concurrent_slot_is_given_back_after_each_reply(tmp_path):
    http, _, auth = rig(tmp_path, max_concurrent=1)
    for stream in (False, True, False):
        assert http.post("/v1/chat/completions", json={**CHAT, "stream": stream}, headers=auth).status_code == 200
