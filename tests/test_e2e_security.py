"""What a host in the middle sees and can do, against the real processes: ciphertext only, and
a tampered frame aborts its session with a clear error, is counted, and the nodes recover."""
import re
import shutil
import time

import pytest
import requests
import torch

from launcher.stack import ROOT, Stack
from tests.conftest import chat_ids
from tests.e2e import PORT_BASE, PORTS, counter, own_ports, stack_env, start_roles, start_stack
from tests.proxy import HostProxy

pytestmark = pytest.mark.slow
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def proxied(release_dir, tmp_path_factory):
    node2 = f"http://127.0.0.1:{PORTS['TWINTEE_NODE2_PORT']}"
    with HostProxy(node2, PORT_BASE + 10, step_upstream=int(PORTS["TWINTEE_NODE2_STEP_PORT"]),
                   step_port=PORT_BASE + 11) as proxy:
        stack = start_stack(release_dir, tmp_path_factory.mktemp("logs"), TWINTEE_NODE2_URL=proxy.url,
                            TWINTEE_NODE2_STEP_URL=proxy.step_url)
        yield stack, proxy
        stack.stop()


def generate(stack, **extra):
    return requests.post(stack.url("node1") + "/generate", headers=stack.auth, json={"messages": PROMPT, "max_tokens": 16, **extra}, timeout=120)


def test_capture_shows_neither_hidden_states_nor_token_ids(proxied, smollm):
    stack, proxy = proxied
    out = generate(stack).json()
    capture = proxy.capture()
    assert any(method == "STEP" for method, _, _ in proxy.requests)  # the steps crossed the relayed socket
    model, tok, _ = smollm
    ids = chat_ids(tok, PROMPT)
    with torch.inference_mode():
        hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[15][0]
    windows = [hidden[row].numpy().tobytes()[:16] for row in range(0, len(ids), 5)]
    assert capture and not any(w in capture for w in windows)
    token_bytes = torch.tensor(out["token_ids"], dtype=torch.int64).numpy().tobytes()
    assert token_bytes not in capture and out["text"].encode() not in capture
    # No plaintext safetensors header (tensor names, dtypes) crosses the wire.
    for marker in (b'"hidden"', b'"ids"', b'"dtype":"F32"', b'"dtype":"I64"'):
        assert marker not in capture


def test_a_tampered_frame_is_refused_and_counted_and_the_session_replayed_under_new_keys(proxied):
    stack, proxy = proxied
    expected = generate(stack).json()["token_ids"]
    before = requests.get(stack.url("node1") + "/metrics", timeout=10).text
    proxy.tamper_next_step = True
    r = generate(stack)
    metrics = requests.get(stack.url("node2") + "/metrics", timeout=10).text
    assert re.search(r'twintee_frames_rejected_total\{reason="tag"\} [1-9]', metrics)
    # node2 applied nothing of the flipped frame; node1 dropped that channel, handshook again and
    # replayed the session (issue 13), so the host's tampering cost a round trip, not the request.
    assert r.status_code == 200 and r.json()["token_ids"] == expected, r.text
    after = requests.get(stack.url("node1") + "/metrics", timeout=10).text
    assert counter(after, "twintee_session_replays_total") == counter(before, "twintee_session_replays_total") + 1
    assert counter(after, 'twintee_handshakes_total{outcome="ok"}') > counter(before, 'twintee_handshakes_total{outcome="ok"}')
    again = generate(stack).json()
    assert again.get("token_ids") == expected, again


def test_node_with_modified_code_gets_no_key(release_dir, tmp_path):
    """The release's reference values cover the code: a changed node1 is refused its shard key."""
    copy = tmp_path / "checkout"
    for name in ("node1", "node2", "shared", "attestation", "webui"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "node1" / "app.py", "a") as f:
        f.write("\n# a change made after `make prepare`\n")
    # Ports of its own: the module's proxied stack is still running.
    env = stack_env(release_dir, **own_ports(40))
    good = start_roles(Stack(env, tmp_path), ("broker", "node2"))
    bad = Stack(env, tmp_path, root=copy)
    try:
        bad.start("node1")
        deadline, health = time.monotonic() + 60, {}
        while time.monotonic() < deadline and health.get("status") != "failed":
            try:
                health = requests.get(bad.url("node1") + "/health", timeout=5).json()
            except requests.RequestException:
                pass
            time.sleep(0.5)
        assert health.get("status") == "failed"
        assert "measurement" in health["reason"] and "code" in health["reason"]
        # The peer refused it too, and says which measurement component differed.
        assert "failed attestation" in health["node2"]
        peer = requests.get(good.url("node2") + "/health", timeout=5).json()["peer"]
        assert peer["verified"] is False and peer["failed"] == "measurement" and "code" in peer["detail"]
        assert "make prepare" in peer["detail"]
    finally:
        bad.stop()
        good.stop()
    assert "refused node1's evidence" in (tmp_path / "node2.log").read_text()
    audit = (release_dir / "audit" / "broker.jsonl").read_text()
    assert '"verdict":"refused"' in audit.replace(" ", "")
