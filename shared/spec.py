"""The architecture numbers of a Llama-family model, read from its Hugging Face config."""
from dataclasses import dataclass

SUPPORTED_TYPES = ("llama", "mistral", "qwen2")


class UnsupportedModel(ValueError):
    """The model's config asks for something the lean engine does not implement."""


@dataclass(frozen=True)
class ModelSpec:
    model_type: str
    num_layers: int
    hidden: int  # D
    heads: int  # H
    kv_heads: int  # Hkv
    head_dim: int  # hd
    intermediate: int  # F
    vocab: int  # V
    eps: float
    rope_theta: float
    max_positions: int
    attention_bias: bool
    tie_embeddings: bool
    sliding_window: int | None

    @classmethod
    def from_config(cls, cfg: dict) -> "ModelSpec":
        kind = cfg.get("model_type")
        if kind not in SUPPORTED_TYPES:
            raise UnsupportedModel(f"model_type {kind!r} is not one of {SUPPORTED_TYPES}")
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise UnsupportedModel(f"rope type {rope_type!r} is not supported (only 'default')")
        heads = cfg["num_attention_heads"]
        return cls(
            model_type=kind,
            num_layers=cfg["num_hidden_layers"],
            hidden=cfg["hidden_size"],
            heads=heads,
            kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            intermediate=cfg["intermediate_size"],
            vocab=cfg["vocab_size"],
            eps=cfg["rms_norm_eps"],
            rope_theta=rope.get("rope_theta", cfg.get("rope_theta", 10000.0)),
            max_positions=cfg.get("max_position_embeddings", 2048),
            # Qwen2 has biases on q/k/v without saying so in `attention_bias`.
            attention_bias=bool(cfg.get("attention_bias", kind == "qwen2")),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            sliding_window=cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None,
        )
