"""megatron-core 0.16 optimizer repairs for checkpoint resume, and the helpers they need.

Each repair names the bug it works around. Without them a resumed run with torch AdamW either
cannot load (bug 1) or silently takes wrong Adam bias corrections (bug 2); the exact-resume tests
in tests/training/test_checkpoint.py and tests/platform/test_mcore_optimizer.py fail without each.
Scoped to the optimizer instance they are given; nothing global is patched.
"""

from __future__ import annotations

import torch


def chained_optimizers(optimizer) -> list:
    """The megatron optimizers behind a possibly chained optimizer."""
    return getattr(optimizer, "chained_optimizers", None) or [optimizer]


def inner_torch_optimizers(optimizer) -> list:
    """The torch optimizers (e.g. AdamW) megatron's optimizers drive."""
    return [o.optimizer for o in chained_optimizers(optimizer) if getattr(o, "optimizer", None) is not None]


def step_tensor(group: dict, param: torch.Tensor, value: int) -> torch.Tensor:
    """An AdamW 'step' where torch keeps it: on the parameter's device for fused/capturable, else CPU."""
    on_device = group.get("fused") or group.get("capturable")
    return torch.tensor(float(value), dtype=torch.float32, device=param.device if on_device else "cpu")


def prime_adam_state(optimizer) -> None:
    """Give a fresh (never stepped) torch AdamW a full state: the distributed optimizer's
    `state_dict()` reads every parameter's 'step', and megatron's init_state_fn creates none."""
    for opt in inner_torch_optimizers(optimizer):
        for group in opt.param_groups:
            for p in group["params"]:
                st = opt.state[p]
                if "exp_avg" not in st:
                    st["exp_avg"] = torch.zeros_like(p.data)
                    st["exp_avg_sq"] = torch.zeros_like(p.data)
                st.setdefault("step", step_tensor(group, p, 0))


def load_optimizer_state(optimizer, state) -> None:
    """Bug 1: with torch AdamW, the distributed optimizer's fully_reshardable load copies every key
    of the live per-parameter state from the checkpoint, but the checkpoint carries no per-parameter
    'step' (KeyError 'step'). Hide 'step' during the copy; `fix_adam_steps` restores it. Scoped to
    this call, on this optimizer instance only."""
    undo = []
    for o in chained_optimizers(optimizer):
        orig = getattr(o, "_set_main_param_and_optimizer_states", None)
        if orig is None or not hasattr(o, "model_param_group_index_map"):
            continue

        def without_step(model_param, tensors, _orig=orig, _o=o):
            gi, go = _o.model_param_group_index_map[model_param]
            st = _o.optimizer.state[_o.optimizer.param_groups[gi]["params"][go]]
            step = st.pop("step", None)
            try:
                _orig(model_param, tensors)
            finally:
                if step is not None:
                    st["step"] = step

        o._set_main_param_and_optimizer_states = without_step
        undo.append(o)
    try:
        optimizer.load_state_dict(state)
    finally:
        for o in undo:
            del o._set_main_param_and_optimizer_states


def fix_adam_steps(optimizer, steps: int) -> None:
    """Bug 2: load_state_dict gives every parameter ONE shared `step` tensor, which torch AdamW then
    increments once per parameter, silently corrupting bias correction. Give each parameter its own
    step tensor holding the true number of optimizer steps taken."""
    for opt in inner_torch_optimizers(optimizer):
        for group in opt.param_groups:
            for p in group["params"]:
                st = opt.state.get(p)
                if st is not None and "step" in st:
                    st["step"] = step_tensor(group, p, steps)
