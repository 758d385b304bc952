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


def layer_spec(impl: str, liger_kernels: tuple[str, ...] = ()):
    """The TransformerLayer spec for a Qwen2 block (pre-norm, GQA with QKV bias, SwiGLU). `liger_kernels`
    (local spec, checked by `model.liger.check_liger_request`): Liger's RMSNorm and/or SwiGLU."""
    if impl == "transformer_engine":
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=False)
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from megatron_redi.model.attention import SDPACoreAttention

    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    norm = final_norm_spec(impl, liger_kernels)
    spec.submodules.input_layernorm = norm
    spec.submodules.pre_mlp_layernorm = norm
    spec.submodules.self_attention.submodules.core_attention = SDPACoreAttention
    if "swiglu" in liger_kernels:
        from megatron_redi.model.liger import liger_swiglu_mlp_class

        spec.submodules.mlp.module = liger_swiglu_mlp_class()
    return spec


def final_norm_spec(impl: str, liger_kernels: tuple[str, ...] = ()):
    if impl == "transformer_engine":
        return None  # TE block spec supplies its own final norm
    if "rms_norm" in liger_kernels:
        from megatron_redi.model.liger import liger_rms_norm_class

        return liger_rms_norm_class()
    from megatron_redi.model.norm import RMSNorm

    return RMSNorm
