"""Every CPU compatibility patch for megatron-core 0.16, in one place.

megatron-core assumes CUDA. On CPU-only hosts (development, CI) we run the same code with gloo
after these patches. `apply_cpu_patches()` is a no-op when CUDA is available, so GPU runs are
untouched. Each patch was found necessary by removing it and re-running the test suite.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

_APPLIED = False


def _to_cpu_device(device):
    if device is None:
        return None
    if isinstance(device, int):
        return torch.device("cpu")
    if isinstance(device, str) and device.startswith("cuda"):
        return torch.device("cpu")
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    return device


class _CudaToCpuMode(TorchFunctionMode):
    """Reason: ~70 hard-coded `device="cuda"`, `.cuda()` and `pin_memory=True` in schedules,
    masks, DDP buffers and the optimizer; mapping them here is cheaper than patching each site."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if "device" in kwargs:
            kwargs["device"] = _to_cpu_device(kwargs["device"])
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        name = getattr(func, "__name__", "")
        if name == "cuda" and args and isinstance(args[0], torch.Tensor):
            return args[0]
        if name == "pin_memory" and args and isinstance(args[0], torch.Tensor):
            return args[0]
        if name == "to" and len(args) > 1 and not isinstance(args[1], torch.dtype | torch.Tensor):
            args = (args[0], _to_cpu_device(args[1]), *args[2:])
        return func(*args, **kwargs)


def _cpu_tensor_type(orig):
    """Reason: grad clipping and the optimizers assert `param.type() == 'torch.cuda.FloatTensor'`."""

    def type_(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None and not kwargs:
            name = orig(self)
            if self.device.type == "cpu" and name.startswith("torch.") and ".cuda." not in name:
                return name.replace("torch.", "torch.cuda.", 1)
            return name
        return orig(self, dtype, non_blocking, **kwargs)

    return type_


def apply_cpu_patches() -> bool:
    """Patch megatron-core for CPU + gloo when CUDA is absent. Returns True if patches were applied."""
    global _APPLIED
    if torch.cuda.is_available():
        return False
    if _APPLIED:
        return True
    from megatron.core.tensor_parallel import random as mrandom

    # Reason: the CUDA RNG tracker reads/writes CUDA generator state; on CPU the default generator
    # plays that role (dropout is off in our configs, so sharing it changes no numbers).
    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    torch.cuda.set_rng_state = lambda state, device="cuda": torch.set_rng_state(state)
    torch.cuda.manual_seed = lambda seed: None
    torch.cuda.manual_seed_all = lambda seed: None
    mrandom._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mrandom._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    # Reason: `torch.cuda.current_device()` is used as a device argument (rope, p2p, buffers).
    torch.cuda.current_device = lambda: "cpu"
    # Reason: p2p communication and the checkpoint writer call synchronize unconditionally.
    torch.cuda.synchronize = lambda device=None: None
    # Reason: memory statistics are queried for logging in megatron utilities.
    torch.cuda.memory_allocated = lambda device=None: 0
    torch.cuda.max_memory_allocated = lambda device=None: 0
    # Reason: megatron wraps its SwiGLU math in torch.compile at import; on CPU inductor builds C++ for
    # ~20 s per process and kernel for no benefit in tests. Keep the autograd function (it saves only
    # its input), run its math eagerly.
    from megatron.core.fusions import fused_bias_swiglu

    for name in ("swiglu", "swiglu_back"):
        fn = getattr(fused_bias_swiglu, name)
        setattr(fused_bias_swiglu, name, getattr(fn, "__wrapped__", fn))
    # Reason: see `_cpu_tensor_type`.
    torch.Tensor.type = _cpu_tensor_type(torch.Tensor.type)
    # Reason: see `_CudaToCpuMode`; entered once for the life of the process.
    _CudaToCpuMode().__enter__()
    _APPLIED = True
    return True
