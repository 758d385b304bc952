"""One global batch: this DP rank's examples of it, packed into micro-batches, and its normaliser."""

from __future__ import annotations

from dataclasses import dataclass

from megatron_redi.data.batch import MicroBatch
from megatron_redi.data.dataset import make_micro_batches, make_packed_micro_batches, pad_multiple
from megatron_redi.data.sampler import GlobalBatchSampler
from megatron_redi.objectives.objective import Objective
from megatron_redi.platform.distributed import ParallelConfig
from megatron_redi.training.config import DataArgs


@dataclass
class GlobalBatch:
    micro_batches: list[MicroBatch]  # this DP rank's share, each one padding-free packed row
    global_units: float  # the objective's normaliser over the whole global batch (all DP ranks)
    tokens: int  # real tokens in the whole global batch (throughput)
    doc_lengths: list[int]  # token count of every document of the global batch (FLOPs)
    packing_efficiency: float  # real / total tokens of this rank's micro-batches


class GlobalBatches:
    """Draws global batch after global batch from the sampler's position `consumed_samples`."""

    def __init__(self, examples, sampler: GlobalBatchSampler, data: DataArgs, parallel: ParallelConfig,
                 objective: Objective):
        self.examples, self.sampler, self.data, self.objective = examples, sampler, data, objective
        self.multiple = pad_multiple(parallel.tensor_model_parallel_size, parallel.context_parallel_size,
                                     parallel.sequence_parallel)
        self.capacity = data.capacity(objective.paired)

    def at(self, consumed_samples: int) -> GlobalBatch:
        ex = self.examples
        gidx = self.sampler.global_indices(consumed_samples)
        local = [ex[i] for i in self.sampler.local_indices(consumed_samples)]
        if self.data.packing == "ffd":
            mbs, eff = make_packed_micro_batches(local, self.capacity, self.multiple)
        else:
            mbs = make_micro_batches(local, self.data.micro_batch_size, self.multiple)
            eff = sum(mb.num_real_tokens for mb in mbs) / sum(mb.tokens.numel() for mb in mbs)
        return GlobalBatch(mbs, self.objective.units(ex, gidx), sum(ex.num_tokens(i) for i in gidx),
                           [n for i in gidx for n in ex.doc_lengths(i)], eff)
