"""HF Qwen2 `config.json` -> megatron `TransformerConfig` and model-shape facts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


def check_reproducible(cfg: dict, src: str) -> None:
    """Refuse an HF config whose model this code would NOT compute exactly: the trainer, the scorer and
    the converter all read configs through `Qwen2Shape.from_hf`, so they accept and refuse the same
    ones (a scaled RoPE silently run as plain RoPE is a known failure kind). ValueError names the field."""
    if cfg.get("use_sliding_window"):
        raise ValueError(f"{src}: use_sliding_window is true; sliding-window attention is not implemented")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{src}: hidden_act is {cfg['hidden_act']!r}, Qwen2 uses 'silu'")
    scaling = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    rope_type = scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise ValueError(f"{src}: RoPE type {rope_type!r} (rope_scaling) is not supported (only plain RoPE)")
    if cfg.get("attention_dropout", 0.0):
        raise ValueError(f"{src}: attention_dropout is {cfg['attention_dropout']}; training runs without "
                         f"dropout (set it to 0.0)")


@dataclass
class Qwen2Shape:
    """The architecture facts we need from an HF Qwen2 config."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    initializer_range: float = 0.02
    source: str = "<dict>"

    @classmethod
    def from_hf(cls, path_or_dict: str | Path | dict, *, rope_theta: float | None = None,
                max_position_embeddings: int | None = None, source: str | None = None) -> Qwen2Shape:
        """The shape of an HF Qwen2 config (a folder, its config.json, or the dict with `source` naming
        where it came from). ValueError names the file and field when this code would not reproduce it."""
        if isinstance(path_or_dict, dict):
            cfg, src = path_or_dict, source or "<dict>"
        else:
            p = Path(path_or_dict)
            if p.is_dir():
                p = p / "config.json"
            if not p.is_file():
                raise FileNotFoundError(f"--model-config: no HF config.json at {p}")
            cfg, src = json.loads(p.read_text()), str(p)
        arch = cfg.get("model_type") or ""
        archs = cfg.get("architectures") or []
        if arch != "qwen2" and "Qwen2ForCausalLM" not in archs:
            raise ValueError(f"{src}: expected a Qwen2 model (model_type 'qwen2'), got model_type={arch!r} "
                             f"architectures={archs}")
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in cfg]
        if missing:
            raise ValueError(f"{src}: missing keys {missing}")
        check_reproducible(cfg, src)
        rope = cfg.get("rope_theta")
        if rope is None:
            rope = (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        shape = cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=int(cfg["hidden_size"]),
            intermediate_size=int(cfg["intermediate_size"]),
            num_hidden_layers=int(cfg["num_hidden_layers"]),
            num_attention_heads=int(cfg["num_attention_heads"]),
            num_key_value_heads=int(cfg.get("num_key_value_heads", cfg["num_attention_heads"])),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope_theta if rope_theta is not None else rope),
            max_position_embeddings=int(max_position_embeddings or cfg.get("max_position_embeddings", 32768)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            initializer_range=float(cfg.get("initializer_range", 0.02)),
            source=src,
        )
        if shape.hidden_size % shape.num_attention_heads:
            raise ValueError(f"{src}: hidden_size {shape.hidden_size} not divisible by num_attention_heads")
        if shape.num_attention_heads % shape.num_key_value_heads:
            raise ValueError(f"{src}: num_attention_heads not divisible by num_key_value_heads")
        return shape

    def padded_vocab_size(self, tp: int, divisible_by: int = 128) -> int:
        """Megatron pads the vocabulary so every TP shard has the same size."""
        m = divisible_by * tp
        return ((self.vocab_size + m - 1) // m) * m

    def check_parallel(self, tp: int, pp: int) -> None:
        """Fail early, naming the flag, when a layout cannot split this model."""
        checks = [("--tensor-model-parallel-size", tp, name) for name in
                  ("num_attention_heads", "num_key_value_heads", "intermediate_size")]
        checks.append(("--pipeline-model-parallel-size", pp, "num_hidden_layers"))
        for flag, size, name in checks:
            if getattr(self, name) % size:
                raise ValueError(f"{flag} {size} does not divide {name} {getattr(self, name)} ({self.source})")

    def to_hf_dict(self) -> dict:
        return {
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_key_value_heads,
            "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
        }


@dataclass
class ModelBuildConfig:
    """How to lay the model out and run it (parallelism, precision, memory trade-offs)."""

    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    context_parallel_size: int = 1
    sequence_parallel: bool = False
    bf16: bool = False
    recompute_granularity: str | None = None  # None | "full" | "selective"
    recompute_num_layers: int = 1
    recompute_modules: tuple[str, ...] | None = None  # selective: megatron's recompute_modules
    transformer_impl: str = "auto"  # auto | local | transformer_engine
    fp8_format: str | None = None
    fp8_recipe: str = "delayed"
    first_last_layers_bf16: bool = False
    logprob_chunk_size: int = 0  # tokens per chunk of the log-prob kernel; 0: from a byte budget
    # Liger-Kernel's Triton kernels for the local spec ("rms_norm", "swiglu"); GPU only (model.liger)
    liger_kernels: tuple[str, ...] = ()
    # fast_init: megatron's own (device-side) initialisation instead of the layout-independent one;
    # for benchmarks and for runs that load a checkpoint anyway
    fast_init: bool = False


def transformer_config(shape: Qwen2Shape, build: ModelBuildConfig):
    """Build the megatron TransformerConfig for a Qwen2 model."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    dtype = torch.bfloat16 if build.bf16 else torch.float32
    kwargs = dict(
        num_layers=shape.num_hidden_layers,
        hidden_size=shape.hidden_size,
        ffn_hidden_size=shape.intermediate_size,
        num_attention_heads=shape.num_attention_heads,
        num_query_groups=shape.num_key_value_heads,
        kv_channels=shape.hidden_size // shape.num_attention_heads,
        normalization="RMSNorm",
        layernorm_epsilon=shape.rms_norm_eps,
        activation_func=F.silu,
        gated_linear_unit=True,
        add_bias_linear=False,
        add_qkv_bias=True,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        init_method_std=shape.initializer_range,
        use_cpu_initialization=not build.fast_init,
        params_dtype=dtype,
        bf16=build.bf16,
        pipeline_dtype=dtype,
        tensor_model_parallel_size=build.tensor_model_parallel_size,
        pipeline_model_parallel_size=build.pipeline_model_parallel_size,
        context_parallel_size=build.context_parallel_size,
        sequence_parallel=build.sequence_parallel,
        # objectives return sums already normalised by the global batch (see objectives.losses)
        calculate_per_token_loss=True,
        # SwiGLU through megatron's autograd function: it keeps only its input for backward (the
        # plain chain keeps three ffn-sized tensors). Compiled on GPU; eager on CPU (cpu_patches).
        bias_activation_fusion=True,
        # the other fusions need TE/apex kernels

        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        deallocate_pipeline_outputs=True,
    )
    if build.recompute_granularity == "full":
        kwargs.update(recompute_granularity="full", recompute_method="uniform",
                      recompute_num_layers=build.recompute_num_layers)
    elif build.recompute_granularity == "selective":
        kwargs.update(recompute_granularity="selective",
                      recompute_modules=list(build.recompute_modules or ("core_attn",)))
    if build.fp8_format:
        kwargs.update(fp8=build.fp8_format, fp8_recipe=build.fp8_recipe)
        if build.first_last_layers_bf16:
            kwargs.update(first_last_layers_bf16=True, num_layers_at_start_in_bf16=1,
                          num_layers_at_end_in_bf16=1)
    return TransformerConfig(**kwargs)
