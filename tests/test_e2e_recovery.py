"""Failure and recovery against the real processes (issue 13): channels renewed before their limits
with streams in flight, and node1's /health truthful while node2 is down or still loading."""
import time

import pytest
import requests

from tests.conftest import chat_ids, hf_greedy
from tests.e2e import start_stack

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "Tell me about the moon in a few sentences."}]


@pytest.fixture(scope="module")
def stack(release_dir, tmp_path_factory):
    # 25 frames per channel: every stream below outlives several channels.
    s = start_stack(release_dir, tmp_path_factory.mktemp("logs"), TWINTEE_REKEY_FRAMES="25")
    yield s
    s.stop()


def test_streams_outlive_their_channels_with_the_reference_tokens(stack, smollm):
    # Issue 13: with TWINTEE_REKEY_FRAMES=25 every 60-token stream died at token 23.
    model, tok, _ = smollm
    reference = hf_greedy(model, chat_ids(tok, MESSAGES), 60)
    reference = reference[:-1] if reference[-1] == tok.eos_token_id else reference
    for _ in range(2):
        r = requests.post(stack.url("node1") + "/generate", headers=stack.auth, json={"messages": MESSAGES, "max_tokens": 60}, timeout=120)
        assert r.status_code == 200 and r.json()["token_ids"] == reference


def test_node1_health_is_503_until_node2_is_loaded_again(stack):
    stack.stop("node2")
    assert requests.get(stack.url("node1") + "/health", timeout=10).status_code == 503
    stack.start("node2")
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        node1 = requests.get(stack.url("node1") + "/health", timeout=10).status_code
        try:
            node2 = requests.get(stack.url("node2") + "/health", timeout=10).status_code
        except requests.ConnectionError:
            node2 = None
        seen.append((node1, node2))
        if node1 == 200:
            break
        time.sleep(0.2)
    # node1 never said 200 while node2 was unreachable or loading (503)
    assert seen[-1][0] == 200 and all(n1 == 503 for n1, n2 in seen if n2 != 200)
    r = requests.post(stack.url("node1") + "/generate", headers=stack.auth, json={"prompt": "Hi", "max_tokens": 5}, timeout=120)
    assert r.status_code == 200


def test_node2_frees_a_killed_node1s_sessions_when_the_new_one_speaks(stack):
    # Issue 13: after kill -9 of node1 mid-stream node2 kept the orphan session for its 300 s idle timeout.
    import threading

    import psutil

    from tests.e2e import start_roles

    body = {"prompt": "Write a long story about a lighthouse.", "max_tokens": 400, "stream": True}

    def victim():
        try:
            requests.post(stack.url("node1") + "/generate", headers=stack.auth, json=body, timeout=120)
        except requests.RequestException:
            pass  # its node1 is killed under it: the point of the test

    threading.Thread(target=victim, daemon=True).start()
    deadline = time.monotonic() + 60
    while requests.get(stack.url("node2") + "/health", timeout=10).json().get("sessions", 0) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    master = psutil.Process(stack.procs.pop("node1").pid)
    for proc in [*master.children(), master]:
        proc.kill()  # kill -9, worker and master: nothing is closed on node2
    assert requests.get(stack.url("node2") + "/health", timeout=10).json()["sessions"] == 1
    start_roles(stack, ("node1",))
    r = requests.post(stack.url("node1") + "/generate", headers=stack.auth, json={"prompt": "Hi", "max_tokens": 3}, timeout=120)
    assert r.status_code == 200
    # The new node1 closes its own session in the frame after its last step, a moment after replying.
    deadline = time.monotonic() + 5
    while requests.get(stack.url("node2") + "/health", timeout=10).json()["sessions"] != 0:
        assert time.monotonic() < deadline, "node2 still holds a session"
        time.sleep(0.1)


def stream_ids(stack, body: dict, on_token=None) -> tuple[list[int], dict]:
    """POSTs a streaming /generate; -> (token ids, the last event before [DONE])."""
    import json

    ids, last = [], None
    with requests.post(stack.url("node1") + "/generate", headers=stack.auth, json={**body, "stream": True}, stream=True, timeout=300) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("token_id") is not None:
                ids.append(event["token_id"])
                if on_token:
                    on_token(len(ids))
            last = event
    return ids, last


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.9, "seed": 1234}], ids=["greedy", "seeded"])
def test_node2_killed_mid_stream_the_stream_goes_on_with_the_same_tokens(stack, smollm, sampling):
    # Issue 13: kill -9 of node2's worker ended the stream with "node2 unreachable". node1 now waits
    # for the respawned worker, replays the session into it, and the client sees the tokens of an
    # uninterrupted run (seeded sampling draws from (seed, position), so replayed draws match too).
    import psutil

    body = {"messages": MESSAGES, "max_tokens": 48, **sampling}
    reference, summary = stream_ids(stack, body)
    assert len(reference) >= 20 and "error" not in summary
    if not sampling:
        model, tok, _ = smollm
        assert reference == hf_greedy(model, chat_ids(tok, MESSAGES), 48)[: len(reference)]
    killed = []

    def kill_node2_worker(n):
        if n == 8 and not killed:
            for worker in psutil.Process(stack.procs["node2"].pid).children():
                worker.kill()  # gunicorn's master respawns it; the new worker loads for seconds
                killed.append(worker.pid)

    replays = replay_count(stack)
    t0 = time.monotonic()
    ids, summary = stream_ids(stack, body, on_token=kill_node2_worker)
    print(f"\nnode2 worker killed after 8 tokens: stream finished in {time.monotonic() - t0:.1f} s, "
          f"{len(ids)} tokens, summary {summary.get('finish_reason')}")
    assert killed and ids == reference and "error" not in summary
    assert replay_count(stack) == replays + 1


def replay_count(stack) -> float:
    for line in requests.get(stack.url("node1") + "/metrics", timeout=10).text.splitlines():
        if line.startswith("twintee_session_replays_total "):
            return float(line.split()[1])
    raise AssertionError("node1's /metrics has no twintee_session_replays_total")
