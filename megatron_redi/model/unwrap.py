"""The bare model under megatron's wrappers (DDP, Float16Module); no megatron import."""

from __future__ import annotations


def unwrap_model(model):
    """The bare GPTModel under megatron DDP: checkpoint keys never carry a `module.` prefix, so
    training checkpoints and converted HF checkpoints share one key space."""
    while hasattr(model, "module"):
        model = model.module
    return model
