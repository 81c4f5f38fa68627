"""Encrypted weights end to end: rotation, anti-rollback, tampered shards and manifests refused at load,
and no plaintext weights on disk after a release and a run."""
import json
import shutil
import subprocess
import sys
import time

import pytest
import requests

from launcher.stack import ROOT, Stack
from tests.conftest import chat_ids, hf_greedy
from tests.e2e import stack_env, start_roles, tenant_key

pytestmark = pytest.mark.slow
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def copy_release(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("audit"))
    return dst


def wait_failed(stack: Stack, role: str, timeout=90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            health = requests.get(stack.url(role) + "/health", timeout=5).json()
            if health.get("status") == "failed":
                return health["reason"]
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{role} did not fail")


def run_release(*args):
    return subprocess.run([sys.executable, "-m", "release", *args], cwd=ROOT, capture_output=True, text=True, check=True)


def test_rotation_serves_new_version_and_retires_old(release_dir, tmp_path, smollm):
    data = copy_release(release_dir, tmp_path / "rel")
    old = json.loads((data / "model" / "manifest.json").read_text())
    saved = tmp_path / "v1"
    saved.mkdir()
    for f in ["manifest.json"] + [s["file"] for s in old["body"]["shards"].values()]:
        shutil.copy(data / "model" / f, saved / f)
    run_release("rotate", "--retire-old", "--data-dir", str(data))
    new = json.loads((data / "model" / "manifest.json").read_text())["body"]
    assert new["version"] == 2 and {s["key_id"].split(":")[-2] for s in new["shards"].values()} == {"v2"}
    assert not (data / "model" / old["body"]["shards"]["node1"]["file"]).exists()
    model, tok, _ = smollm
    ref = [t for t in hf_greedy(model, chat_ids(tok, PROMPT), 12) if t != tok.eos_token_id]
    stack = start_roles(Stack(stack_env(data), tmp_path), ("broker", "node2", "node1"))
    try:
        out = requests.post(stack.url("node1") + "/generate", headers={"Authorization": f"Bearer {tenant_key(data)}"}, json={"messages": PROMPT, "max_tokens": 12}, timeout=120).json()
        assert out["token_ids"] == ref
    finally:
        stack.stop()
    # Roll the files back to version 1: the policy's minimum is now 2, so the node refuses them.
    for f in saved.iterdir():
        shutil.copy(f, data / "model" / f.name)
    stack = Stack(stack_env(data), tmp_path)
    try:
        start_roles(stack, ("broker",))
        stack.start("node2")
        assert "rollback" in wait_failed(stack, "node2")
    finally:
        stack.stop()


@pytest.mark.parametrize("damage, cause", [("shard", "chunk"), ("manifest", "signature")])
def test_tampered_release_is_refused_at_load(release_dir, tmp_path, damage, cause):
    data = copy_release(release_dir, tmp_path / "rel")
    body = json.loads((data / "model" / "manifest.json").read_text())
    if damage == "shard":
        path = data / "model" / body["body"]["shards"]["node2"]["file"]
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        path.write_bytes(bytes(raw))
    else:
        body["body"]["split_layer"] = 14
        (data / "model" / "manifest.json").write_text(json.dumps(body))
    stack = Stack(stack_env(data), tmp_path)
    try:
        start_roles(stack, ("broker",))
        stack.start("node2")
        assert cause in wait_failed(stack, "node2")
    finally:
        stack.stop()


def test_no_plaintext_weights_under_the_release_after_a_run(release_dir, smollm):
    """Every file of the release that served the other tests, against the plaintext tensors' bytes."""
    state = smollm[0].state_dict()
    needles = [t.contiguous().numpy().tobytes()[4096:4160] for k, t in state.items() if t.numel() > 4096]
    for f in release_dir.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            assert not any(n in blob for n in needles), f"plaintext weights in {f}"
