"""Layer specs: Transformer Engine where it can run, otherwise megatron's local modules + ours."""

from __future__ import annotations

import importlib.util

import torch


def te_available() -> bool:
    """TE is usable only with CUDA; on CPU even importing a broken TE install breaks megatron."""
    return torch.cuda.is_available() and importlib.util.find_spec("transformer_engine") is not None


def resolve_impl(requested: str) -> str:
    if requested == "transformer_engine":
        if not te_available():
            raise RuntimeError("--transformer-impl transformer_engine needs CUDA and transformer-engine "
                               "(pip install '.[gpu]'); neither is available here")
        return requested
    if requested == "local":
        return requested
    return "transformer_engine" if te_available() else "local"


def layer_spec(impl: str):
    """The TransformerLayer spec for a Qwen2 block (pre-norm, GQA with QKV bias, SwiGLU)."""
    if impl == "transformer_engine":
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=False)
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from megatron_redi.model.attention import SDPACoreAttention
    from megatron_redi.model.norm import RMSNorm

    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.input_layernorm = RMSNorm
    spec.submodules.pre_mlp_layernorm = RMSNorm
    spec.submodules.self_attention.submodules.core_attention = SDPACoreAttention
    return spec


def final_norm_spec(impl: str):
    if impl == "transformer_engine":
        return None  # TE block spec supplies its own final norm
    from megatron_redi.model.norm import RMSNorm

    return RMSNorm
