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
