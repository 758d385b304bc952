"""What the GPU stack offers (Transformer Engine, FP8), checked before any collective or data work."""

from __future__ import annotations

import importlib.util

import torch


def check_fp8_request(fp8_format: str | None, transformer_impl: str) -> None:
    """FP8 needs Transformer Engine and an FP8-capable GPU (compute capability >= 8.9); refuse clearly
    rather than silently training in BF16."""
    if transformer_impl == "transformer_engine" or fp8_format:
        if not torch.cuda.is_available():
            raise RuntimeError(f"{'--fp8-format' if fp8_format else '--transformer-impl transformer_engine'} "
                               f"needs a CUDA GPU with Transformer Engine; this machine has no GPU")
        if importlib.util.find_spec("transformer_engine") is None:
            raise RuntimeError(f"{'--fp8-format' if fp8_format else '--transformer-impl transformer_engine'} "
                               "needs transformer-engine (pip install '.[gpu]'), which is not installed")
    if fp8_format:
        if transformer_impl == "local":
            raise RuntimeError("--fp8-format needs --transformer-impl transformer_engine (or auto)")
        major, minor = torch.cuda.get_device_capability()
        if (major, minor) < (8, 9):
            raise RuntimeError(f"--fp8-format needs compute capability >= 8.9 (Ada/Hopper/Blackwell); "
                               f"{torch.cuda.get_device_name()} has {major}.{minor}")
