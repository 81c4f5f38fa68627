"""node1's public API against the real processes: clear 4xx errors, streaming, sampling, session
clean-up when a client goes away, and recovery when node2 restarts."""
import json
import time

import pytest
import requests

from tests.e2e import start_roles, start_stack

pytestmark = pytest.mark.slow
MAX_INPUT = 256


@pytest.fixture(scope="module")
def stack(release_dir, tmp_path_factory):
    s = start_stack(release_dir, tmp_path_factory.mktemp("logs"), TWINTEE_MAX_INPUT_TOKENS=str(MAX_INPUT),
                    TWINTEE_MAX_NEW_TOKENS="512", TWINTEE_MAX_BODY_BYTES="65536")
    yield s
    s.stop()


def post(stack, body, **kw):
    kw = {**kw, "headers": {**stack.auth, **kw.get("headers", {})}}
    return requests.post(stack.url("node1") + "/generate", timeout=120, **({"json": body, "headers": stack.auth}
                                                                          if body is not None else kw))


@pytest.mark.parametrize("body, status, names", [
    ({"messages": []}, 400, "messages"),
    ({}, 400, "prompt"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 513}, 400, "512"),
    ({"prompt": "hi", "temperature": "warm"}, 400, "temperature"),
    ({"prompt": "word " * 400}, 400, f"maximum input length is {MAX_INPUT}"),
])
def test_bad_requests_get_a_clear_4xx_and_the_servers_stay_up(stack, body, status, names):
    r = post(stack, body)
    assert r.status_code == status and names in r.json()["error"]
    assert requests.get(stack.url("node1") + "/health", timeout=10).status_code == 200
    assert requests.get(stack.url("node2") + "/health", timeout=10).status_code == 200


def test_malformed_json_and_oversized_body(stack):
    r = post(stack, None, data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = post(stack, None, data=json.dumps({"prompt": "x" * 70000}), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "65536" in r.json()["error"]
    assert requests.get(stack.url("node1") + "/nope", timeout=10).json() == {"error": "not found"}


def sse(stack, body) -> list:
    with requests.post(stack.url("node1") + "/generate", headers=stack.auth, json={**body, "stream": True}, stream=True, timeout=120) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        return [line[6:] for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]


def test_stream_events_match_the_plain_reply(stack):
    body = {"prompt": "Name two planets.", "max_tokens": 20}
    plain = post(stack, body).json()
    events = sse(stack, body)
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    tokens = [json.loads(e) for e in events[:-2]]
    assert "".join(t["text"] for t in tokens) == plain["text"]
    assert [t["token_id"] for t in tokens if t["token_id"] is not None] == plain["token_ids"]
    assert final["finish_reason"] == plain["finish_reason"] and final["usage"] == plain["usage"]
    assert set(final["metrics"]) == {"ttft_ms", "total_ms", "tokens_per_sec"}


def test_seeded_sampling_is_reproducible_and_stop_strings_cut(stack):
    body = {"prompt": "Tell me a short story about a cat.", "max_tokens": 24, "temperature": 0.9, "top_p": 0.9, "seed": 11}
    a, b = post(stack, body).json(), post(stack, body).json()
    assert a["token_ids"] == b["token_ids"]
    c = post(stack, {**body, "seed": 12}).json()
    assert c["token_ids"] != a["token_ids"]
    greedy = post(stack, {"prompt": "What is the capital of France?", "max_tokens": 30}).json()
    stop = greedy["text"].split()[2]
    cut = post(stack, {"prompt": "What is the capital of France?", "max_tokens": 30, "stop": [stop]}).json()
    assert cut["finish_reason"] == "stop" and cut["text"] == greedy["text"][: greedy["text"].index(stop)]


def node2_sessions(stack) -> int:
    return requests.get(stack.url("node2") + "/health", timeout=10).json()["sessions"]


def test_client_going_away_frees_both_caches(stack):
    with requests.post(stack.url("node1") + "/generate", headers=stack.auth, json={"prompt": "Count from one to five hundred.",
                       "max_tokens": 500, "stream": True}, stream=True, timeout=120) as r:
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
        assert node2_sessions(stack) == 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and node2_sessions(stack):
        time.sleep(0.3)
    assert node2_sessions(stack) == 0
    assert requests.get(stack.url("node1") + "/health", timeout=10).json()["batch"] == 0


def test_node1_rehandshakes_when_node2_restarts(stack):
    before = post(stack, {"prompt": "Hi", "max_tokens": 5}).json()["token_ids"]
    stack.stop("node2")
    health = requests.get(stack.url("node1") + "/health", timeout=10)
    assert health.status_code == 503 and "node2" in health.json()["reason"]
    r = post(stack, {"prompt": "Hi", "max_tokens": 5})
    assert r.status_code in (502, 503) and "node2" in r.json()["error"]
    start_roles(stack, ("node2",))
    stack.wait_healthy("node1")  # the same node1 process, which re-handshakes on its own
    assert post(stack, {"prompt": "Hi", "max_tokens": 5}).json()["token_ids"] == before


def test_a_tiny_temperature_is_greedy_and_never_fails_a_concurrent_stream(stack):
    # Issue 12: {"temperature": 1e-320} passed node1's check, overflowed node2's softmax, and the 500
    # failed every stream batched with it. Now both nodes share one validator and tiny is greedy.
    import threading

    victim_body = {"prompt": "Count from one to twenty, in words.", "max_tokens": 48}
    alone = post(stack, victim_body).json()["token_ids"]
    greedy = post(stack, {"prompt": "hi", "max_tokens": 8}).json()["token_ids"]
    out = {}
    victim = threading.Thread(target=lambda: out.update(victim=post(stack, victim_body)))
    victim.start()
    attacks = [post(stack, {"prompt": "hi", "temperature": 1e-320, "max_tokens": 8}) for _ in range(4)]
    victim.join()
    assert out["victim"].status_code == 200 and out["victim"].json()["token_ids"] == alone
    assert all(a.status_code == 200 and a.json()["token_ids"] == greedy for a in attacks)


def test_gauges_fall_to_zero_as_soon_as_the_last_session_leaves(stack):
    # Issue 13: node1's /metrics showed 16 active sessions and 445 MiB of KV cache after all had ended.
    import threading

    threads = [threading.Thread(target=post, args=(stack, {"prompt": f"Count to {n}.", "max_tokens": 16}))
               for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text = requests.get(stack.url("node1") + "/metrics", timeout=10).text
    gauges = {line.split("{")[0].split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(("twintee_active_sessions", "twintee_kv_cache_bytes"))}
    assert gauges == {"twintee_active_sessions": 0.0, "twintee_kv_cache_bytes": 0.0}, gauges
