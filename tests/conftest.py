"""Shared fixtures: the real SmolLM2 model (loaded once), a prepared release, and small helpers."""
import json
import os
from pathlib import Path

import pytest
import torch

from shared.cpu import read_cpu
from release.source import DEFAULT_SOURCE, load_source

ROOT = Path(__file__).resolve().parents[1]
TEE_SAMPLES = ROOT.parent / "shared" / "tee-samples"

# The CPU as the nodes see it: TWINTEE_CPU_ISA=avx2 (the suite's capped re-run, tests/test_cpu_kinds.py)
# makes an AVX-512 machine behave as an AVX2-only one.
CPU = read_cpu(os.environ.get("TWINTEE_CPU_ISA", "native"))
needs_bf16_kernels = pytest.mark.skipif(
    not CPU.bf16_kernels, reason=f"bfloat16 needs oneDNN's bf16 kernels: CPU flags avx512bw+avx512vl+avx512dq "
                                 f"or avx_ne_convert, which this {CPU.isa} CPU lacks")
BF16 = pytest.param(torch.bfloat16, marks=needs_bf16_kernels, id="bfloat16")


@pytest.fixture(scope="session")
def smollm():
    """(model, tokenizer, model_id): the unsplit reference, dequantized from the packaged GGUF."""
    torch.manual_seed(0)
    return load_source(DEFAULT_SOURCE)


@pytest.fixture(scope="session")
def release_dir(tmp_path_factory, smollm) -> Path:
    """A data directory holding a full release of SmolLM2 (shards, manifest, policy)."""
    from release.publish import publish

    data = tmp_path_factory.mktemp("release")
    publish(DEFAULT_SOURCE, data, loaded=smollm)
    return data


def chat_ids(tokenizer, messages) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def hf_greedy(model, ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers' own generate() on the unsplit model: the reference every path must equal."""
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, len(ids) :].tolist()


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A small randomly initialised Llama written with save_pretrained, plus a tokenizer copy."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False, eos_token_id=2, bos_token_id=1)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).eval().save_pretrained(folder)
    return folder


def run_concurrently(fn, n: int = 8) -> None:
    """Starts `fn` on n threads released together by a barrier, and waits for all of them."""
    import threading

    barrier = threading.Barrier(n)

    def start():
        barrier.wait()
        fn()

    threads = [threading.Thread(target=start) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# --- node2's app in-process, flaskr style: create_app(config, runtime=fake) and its test client ---

class FakeResponder:
    """node2's handshake responder: says what the test sets, hands out the test's channel keys."""

    def __init__(self):
        self.refusal = None  # an AttestationError to raise, or None
        self.keys = None  # the ChannelKeys finish() hands node2

    def respond(self, m1):
        if self.refusal:
            raise self.refusal
        return {"m2": m1}

    def finish(self, m3):
        if self.refusal:
            raise self.refusal
        return self.keys, {"m4": m3}


class FakeEngine:
    """Records each step and answers every session with token 7 (or the test's errors)."""

    def __init__(self):
        self.sessions, self.steps, self.errors = {}, [], {}

    def kv_bytes(self) -> int:
        return 0

    def step(self, entries, hidden, opens, close, observe=None, alone=False, instance=None):
        self.steps.append({"entries": entries, "hidden": hidden, "opens": opens, "close": close,
                           "alone": alone, "instance": instance})
        results = [{"id": e["id"], "step": e["step"], "ok": e["id"] not in self.errors} for e in entries]
        return results, [0 if e["id"] in self.errors else 7 for e in entries], dict(self.errors)


@pytest.fixture()
def node2_runtime(tmp_path):
    """A real Node2Runtime, never started: the test's release, identity, responder and engine stand in
    for loading, so channels, handshake bookkeeping and metrics are node2's own."""
    from types import SimpleNamespace

    from node2.config import Node2Config
    from node2.runtime import Node2Runtime
    from shared.loading import Release

    rt = Node2Runtime(Node2Config())
    rt.state, rt.reason = "ready", "ready"
    rt.release = Release(tmp_path / "model", {"model_id": "tiny", "version": 3, "split_layer": 2}, {
        "model_type": "llama", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 4,
        "intermediate_size": 16, "vocab_size": 32, "rms_norm_eps": 1e-5})
    rt.identity = SimpleNamespace(measurement={"measurement": "ab" * 32},
                                  attester=SimpleNamespace(tee_type="simulated"),
                                  evidence_for_nonce=lambda nonce: {"role": "node2", "nonce": nonce.hex()})
    rt.responder, rt.engine = FakeResponder(), FakeEngine()
    return rt


@pytest.fixture()
def node2_app(node2_runtime):
    from node2.app import create_app

    app = create_app(node2_runtime.config, runtime=node2_runtime)
    app.config["TESTING"] = True
    return app


@pytest.fixture()
def node2_client(node2_app):
    return node2_app.test_client()


# --- tenants: a gate over a throwaway SQLite ledger, for node1's app in-process ---

def tenant_gate(folder: Path, rt, **policy):
    """(node1's Gate over a fresh database in `folder`, the API key of its one tenant `t` with `policy`)."""
    from node1.auth import Gate
    from node1.ledger import Ledger
    from node1.quotas import Quotas
    from node1.store import Store
    from node1.tenants import Policy, Tenants

    store = Store.open("", folder)
    ledger = Ledger(store)
    tenants = Tenants(store)
    key = tenants.create("t", Policy(**policy))
    return Gate(tenants, Quotas(ledger), ledger, rt, rt.config.model.max_new_tokens), key
