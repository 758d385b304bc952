"""Memory-lean elementwise kernels for the local spec (TE's fused norms are not always installed).

The plain-PyTorch RMSNorm keeps an fp32 copy of its input and its normalised output for backward:
6 bytes per element against 2 here (the input in its own dtype plus one fp32 scalar per row). At
1.5B shape that is ~12 KB per token per layer, several GB at 16k tokens. The math is compiled with
torch.compile on CUDA (one fused kernel each way); on CPU it runs eagerly, since inductor's C++
build costs tens of seconds per process for no gain in tests.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings

import torch


def _rms_forward(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    xf = x.float()
    rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    # Qwen2/HF order: normalise in fp32, cast, then scale in the input dtype
    return weight * (xf * rstd).to(x.dtype), rstd


def _rms_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                  rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.float() * rstd
    grad_w = (grad.float() * n.to(x.dtype).float()).reshape(-1, x.shape[-1]).sum(0)
    gn = (grad * weight).float()
    grad_x = rstd * (gn - n * (gn * n).mean(-1, keepdim=True))
    return grad_x.to(x.dtype), grad_w.to(weight.dtype)


@functools.cache
def _kernels(device_type: str):
    if device_type == "cuda":
        if importlib.util.find_spec("triton") is None:  # inductor's GPU backend; torch's CUDA wheels ship it
            warnings.warn("triton is not installed: RMSNorm runs unfused (slower, same memory)", stacklevel=2)
            return _rms_forward, _rms_backward
        # dynamic: packed micro-batches change length every step; one graph serves them all
        return (torch.compile(_rms_forward, dynamic=True), torch.compile(_rms_backward, dynamic=True))
    return _rms_forward, _rms_backward


class _FusedRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        fwd, _ = _kernels(x.device.type)
        y, rstd = fwd(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        _, bwd = _kernels(x.device.type)
        grad_x, grad_w = bwd(grad.contiguous(), x, weight, rstd)
        return grad_x, grad_w, None


def fused_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _FusedRMSNorm.apply(x, weight, eps)
