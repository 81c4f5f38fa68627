"""The benchmark's unsplit baseline: each section converts its own copy of the model, never the shared one."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks.baseline import in_dtype


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def test_a_bfloat16_section_leaves_the_float32_model_unrounded():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    half = in_dtype(model, torch.bfloat16)
    assert half.dtype == torch.bfloat16 and model.dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # ... where converting in place and back (what the bench did) rounds the weights for good
    model.to(torch.bfloat16).to(torch.float32)
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_nodes_dtype_already_is_no_copy():
    model = tiny_model()
    assert in_dtype(model, torch.float32) is model
