"""Liger-Kernel's Triton kernels in the local spec, per model (`--liger-kernels rms_norm swiglu`).

Uses the official Megatron adapter (`liger_kernel.megatron`: `LigerMegatronRMSNorm`,
`LigerMegatronSwiGLU`) rather than kernels of our own. GPU only: liger-kernel needs CUDA and Triton and
is never installed on CPU hosts (`pip install '.[gpu]'`), so it is imported only when asked for, and a
request it cannot serve is refused with the reason instead of silently running something else.

Per model, not Liger's process-wide monkey patch (`apply_liger_kernel_to_megatron`): a fused and an
unfused model can live in one process (tests/gpu compares them), and nothing changes for models that
did not ask. Numerics: Liger's RMSNorm in "llama" casting mode is Qwen2's order (normalise in fp32,
cast, scale in the input dtype), as ours; its SwiGLU reads gate and up from megatron's concatenated
fc1 output and recomputes silu in backward, keeping only its input, as megatron's does.
"""

from __future__ import annotations

import importlib.util

import torch

KERNELS = ("rms_norm", "swiglu")


def liger_unavailable_reason() -> str | None:
    """Why Liger's kernels cannot run here, or None when they can."""
    if not torch.cuda.is_available():
        return "Liger-Kernel's Triton kernels need CUDA (none here)"
    if importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed (pip install '.[gpu]', or its wheel: docs/benchmarks/README.md)"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    return None


def check_liger_request(kernels, impl: str) -> None:
    """Refuse `--liger-kernels` where it cannot run, naming the reason."""
    unknown = sorted(set(kernels) - set(KERNELS))
    if unknown:
        raise ValueError(f"--liger-kernels: unknown kernel(s) {unknown}; choose from {list(KERNELS)}")
    if not kernels:
        return
    if impl == "transformer_engine":
        raise RuntimeError("--liger-kernels applies to the local spec only (Transformer Engine fuses its own "
                           "norms and activations); add --transformer-impl local")
    reason = liger_unavailable_reason()
    if reason:
        raise RuntimeError(f"--liger-kernels {' '.join(kernels)}: {reason}")


def liger_rms_norm_class():
    """`LigerMegatronRMSNorm` with the weight in the model's dtype and our RMSNorm's constructor
    defaults; it tags the weight `sequence_parallel` itself, as ours does."""
    from liger_kernel.megatron import LigerMegatronRMSNorm

    class LigerRMSNorm(LigerMegatronRMSNorm):
        def __init__(self, config, hidden_size: int, eps: float = 1e-6, **kwargs):
            super().__init__(config, hidden_size, eps=eps, **kwargs)
            sp = self.weight.sequence_parallel
            self.weight = torch.nn.Parameter(self.weight.detach().to(config.params_dtype))
            self.weight.sequence_parallel = sp

    return LigerRMSNorm


def liger_swiglu_mlp_class():
    """megatron's MLP whose fused SwiGLU (`bias_swiglu_impl`, taken with `bias_activation_fusion`) is
    `LigerMegatronSwiGLU`, falling back to megatron's for what Liger cannot serve (bias, FP8 input
    store, CPU offload). megatron's MLP.forward reads `bias_swiglu_impl` from its module's globals; it
    is swapped for the duration of this model's MLP forward only (recompute calls forward again)."""
    from liger_kernel.megatron import LigerMegatronSwiGLU
    from megatron.core.transformer import mlp as mlp_module

    native = mlp_module.bias_swiglu_impl
    liger = LigerMegatronSwiGLU(fallback_impl=native)

    class LigerSwiGLUMLP(mlp_module.MLP):
        def forward(self, *args, **kwargs):
            previous = mlp_module.bias_swiglu_impl
            mlp_module.bias_swiglu_impl = liger
            try:
                return super().forward(*args, **kwargs)
            finally:
                mlp_module.bias_swiglu_impl = previous

    return LigerSwiGLUMLP
