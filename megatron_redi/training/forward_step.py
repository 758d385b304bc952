"""The one forward step handed to megatron's pipeline schedules, for training, reference scoring
and the benchmarks alike.

Megatron's schedules call `forward_step(data_iterator, model)` once per micro-batch and then the
returned loss function on the last stage's output. Here the data iterator yields `StepInput`s
(a packed micro-batch and the global normaliser) and the loss is whatever `objective.loss` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Protocol

import torch

from megatron_redi.data.batch import MicroBatch
from megatron_redi.model.gpt import micro_batch_for_this_rank
from megatron_redi.model.unwrap import unwrap_model


@dataclass
class StepInput:
    """What the forward step draws from the data iterator: a micro-batch and the global normaliser."""

    batch: MicroBatch
    global_units: float


class StepObjective(Protocol):
    """What the forward step needs of an objective (`objectives.objective.Objective` and the
    reference scorer's `DocumentSums`)."""

    def token_weights(self, mb: MicroBatch, global_units: float) -> torch.Tensor | None: ...

    def loss(self, logp: torch.Tensor, mb: MicroBatch, global_units: float, cp_group=None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


def _context_parallel_group():
    from megatron.core import parallel_state as ps

    return ps.get_context_parallel_group() if ps.get_context_parallel_world_size() > 1 else None


def _loss_func(objective: StepObjective, mb: MicroBatch, global_units: float, output_tensor):
    """(loss to backprop, units in this micro-batch, metric sums), as megatron's schedules expect
    with `calculate_per_token_loss` (the loss is already divided by the global unit count)."""
    loss, metrics = objective.loss(output_tensor, mb, global_units, _context_parallel_group())
    return loss, torch.tensor(mb.num_units, dtype=torch.int), metrics


def make_forward_step(objective: StepObjective):
    """forward_step(data_iterator, model) for megatron's `get_forward_backward_func()`."""

    def forward_step(data_iterator, model):
        item: StepInput = next(data_iterator)
        bare = unwrap_model(model)
        mb, kwargs = micro_batch_for_this_rank(bare, item.batch)
        if bare.post_process:
            kwargs["token_weights"] = objective.token_weights(mb, item.global_units)
        output = model(mb.tokens, mb.position_ids, mb.segment_ids, labels=mb.labels, **kwargs)
        return output, partial(_loss_func, objective, mb, item.global_units)

    return forward_step
