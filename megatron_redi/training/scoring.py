"""Frozen-reference scoring for DPO: summed completion log-probs of every pair, computed once.

DPO's reference model is the SFT checkpoint. Scoring the pair file once and storing
`ref_chosen_logp` / `ref_rejected_logp` in it means training never holds a second model in memory.
Runs under any TP/PP/CP/DP layout; rows come back in input order.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from megatron_redi.data.batch import MicroBatch
from megatron_redi.data.dataset import make_micro_batches, pad_multiple
from megatron_redi.data.schema import iter_rows
from megatron_redi.model.vocab import check_vocab_fits
from megatron_redi.objectives.losses import ObjectiveConfig
from megatron_redi.objectives.sums import document_sums
from megatron_redi.platform.distributed import device
from megatron_redi.training.config import ScoreConfig
from megatron_redi.training.forward_step import StepInput, make_forward_step
from megatron_redi.training.setup import build_ddp_model, dataset_provider, init_world, is_logging_rank, model_provider


class DocumentSums:
    """The scorer's 'objective': no loss, the per-document completion log-prob sums as its metric."""

    def token_weights(self, mb: MicroBatch, global_units: float) -> None:
        return None

    def loss(self, logp: torch.Tensor, mb: MicroBatch, global_units: float, cp_group=None):
        return torch.zeros((), device=logp.device), {"sums": document_sums(logp, mb, cp_group).detach()}


def score_pairs(cfg: ScoreConfig) -> list | None:
    """Return [(chosen_sum, rejected_sum)] in data order on the logging rank, None elsewhere."""
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_redi.training.checkpoint import load_pretrained

    dp = init_world(cfg.parallel, cfg.seed)
    shape = cfg.model.shape()
    shape.check_parallel(cfg.parallel.tensor_model_parallel_size, cfg.parallel.pipeline_model_parallel_size)
    check_vocab_fits(cfg.model.tokenizer_model, shape)
    examples, data_stats = dataset_provider(cfg.data, cfg.model.tokenizer_model, ObjectiveConfig("redi"),
                                            progress=is_logging_rank() and not cfg.no_progress)
    skipped = data_stats.get("skipped_identical_pairs", 0) + data_stats.get("skipped_too_long", 0)
    if skipped:  # scores are written back row by row: every row must be scored
        raise ValueError(f"--data-path: {skipped} pairs were skipped (identical or longer than --seq-length), so "
                         f"scores would not line up with the rows; score with --keep-identical-pairs "
                         f"--truncate-long-examples (training skips the same pairs and uses the others' scores)")
    model = build_ddp_model(partial(model_provider, cfg.model, cfg.parallel, cfg.seed), cfg.parallel)
    if cfg.pretrained_checkpoint:
        load_pretrained(cfg.pretrained_checkpoint, model, print if is_logging_rank() else lambda _: None)
    model.eval()
    p = cfg.parallel
    multiple = pad_multiple(p.tensor_model_parallel_size, p.context_parallel_size, p.sequence_parallel)
    rank, fwd = ps.get_data_parallel_rank(), get_forward_backward_func()
    forward_step = make_forward_step(DocumentSums())
    mine: list[tuple[int, float, float]] = []
    step = cfg.batch_pairs * dp
    for start in tqdm(range(0, len(examples), step), desc="score",
                      disable=not is_logging_rank() or cfg.no_progress):
        idx = list(range(start + rank, min(start + step, len(examples)), dp))
        mbs = make_micro_batches([examples[i] for i in idx], cfg.data.micro_batch_size, multiple) if idx else []
        n = torch.tensor([len(mbs)], device=device())
        dist.all_reduce(n, op=dist.ReduceOp.MAX)  # every DP rank must run the same schedule length
        while len(mbs) < int(n.item()):  # pad ranks that ran out of rows with a repeat (discarded)
            mbs.append(make_micro_batches([examples[0]], 1, multiple)[0])
        with torch.no_grad():
            out = fwd(forward_step_func=forward_step, data_iterator=iter([StepInput(m, 1.0) for m in mbs]),
                      model=[model], num_microbatches=len(mbs),
                      seq_length=max(m.tokens.shape[1] for m in mbs) // p.context_parallel_size,
                      micro_batch_size=1, forward_only=True)
        if ps.is_pipeline_last_stage():
            flat = [s for d in out for s in d["sums"].view(-1, 2).tolist()]
            mine += [(i, c, r) for i, (c, r) in zip(idx, flat)]
    results = None
    if ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0 \
            and ps.get_context_parallel_rank() == 0:
        gathered = [None] * dp
        dist.all_gather_object(gathered, mine, group=ps.get_data_parallel_group())
        if is_logging_rank():
            table = {i: (c, r) for part in gathered for i, c, r in part}
            results = [table[i] for i in range(len(examples))]
    model.train()
    return results


def write_scored(data_paths: list[str], scores: list, output: str | Path) -> int:
    """Copy the pair rows with the reference log-probs added; atomic (tmp file + rename). Raises
    RuntimeError, writing nothing, when the data holds more or fewer rows than were scored."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    try:
        with open(tmp, "w") as f:
            for path in data_paths:
                for row, _ in iter_rows(path):
                    if n < len(scores):
                        row = dict(row)
                        row["ref_chosen_logp"], row["ref_rejected_logp"] = scores[n]
                        f.write(json.dumps(row) + "\n")
                    n += 1
        if n != len(scores):
            raise RuntimeError(f"scored {len(scores)} pairs but the data has {n} rows (did --data-path change "
                               f"while scoring?)")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return n
