"""Frozen-reference scoring for DPO: summed completion log-probs of every pair, computed once.

DPO's reference model is the SFT checkpoint. Scoring the pair file once and storing
`ref_chosen_logp` / `ref_rejected_logp` in it means training never holds a second model in memory.
Runs under any TP/PP/CP/DP layout; rows come back in input order.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from megatron_redi.data.dataset import make_micro_batches, pad_multiple
from megatron_redi.data.schema import iter_rows
from megatron_redi.training.arguments import TrainConfig, model_shape
from megatron_redi.training.loop import StepInput, build_ddp_model, is_logging_rank


def score_pairs(cfg: TrainConfig, model_provider, dataset_provider, batch_pairs: int = 64) -> list | None:
    """Return [(chosen_sum, rejected_sum)] in data order on the logging rank, None elsewhere."""
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_redi.checkpointing.training import load_pretrained, unwrap
    from megatron_redi.model.gpt import micro_batch_for_this_rank
    from megatron_redi.objectives.compute import document_sums
    from megatron_redi.platform.distributed import (
        ParallelConfig,
        device,
        init_distributed,
        init_model_parallel,
        set_seed,
    )

    init_distributed()
    dp = init_model_parallel(ParallelConfig(cfg.tensor_model_parallel_size, cfg.pipeline_model_parallel_size,
                                            cfg.context_parallel_size, cfg.sequence_parallel))
    set_seed(cfg.seed)
    shape = model_shape(cfg)
    examples, _ = dataset_provider(cfg, progress=is_logging_rank() and not cfg.no_progress)
    model = build_ddp_model(cfg, model_provider)
    if cfg.pretrained_checkpoint:
        load_pretrained(cfg.pretrained_checkpoint, model, shape, cfg)
    model.eval()
    cp_group = ps.get_context_parallel_group() if cfg.context_parallel_size > 1 else None
    multiple = pad_multiple(cfg.tensor_model_parallel_size, cfg.context_parallel_size, cfg.sequence_parallel)
    rank, fwd = ps.get_data_parallel_rank(), get_forward_backward_func()
    mine: list[tuple[int, float, float]] = []

    def forward_step(it, m):
        item = next(it)
        mb, kwargs = micro_batch_for_this_rank(unwrap(m), item.batch)
        out = m(mb.tokens, mb.position_ids, mb.segment_ids, labels=mb.labels, **kwargs)

        def loss_func(logp):
            sums = document_sums(logp, mb, cp_group).detach()
            return torch.zeros((), device=logp.device), torch.tensor(1), {"sums": sums}
        return out, loss_func

    starts = range(0, len(examples), batch_pairs * dp)
    for start in tqdm(starts, desc="score", disable=not is_logging_rank() or cfg.no_progress):
        idx = list(range(start + rank, min(start + batch_pairs * dp, len(examples)), dp))
        mbs = make_micro_batches([examples[i] for i in idx], cfg.micro_batch_size, multiple) if idx else []
        n = torch.tensor([len(mbs)], device=device())
        dist.all_reduce(n, op=dist.ReduceOp.MAX)  # every DP rank must run the same schedule length
        while len(mbs) < int(n.item()):  # pad ranks that ran out of rows with a repeat (discarded)
            mbs.append(make_micro_batches([examples[0]], 1, multiple)[0])
        with torch.no_grad():
            out = fwd(forward_step_func=forward_step, data_iterator=iter([StepInput(m, 1.0) for m in mbs]),
                      model=[model], num_microbatches=len(mbs),
                      seq_length=max(m.tokens.shape[1] for m in mbs) // cfg.context_parallel_size,
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
    unwrap(model).train()
    return results


def write_scored(data_paths: list[str], scores: list, output: str | Path) -> int:
    """Copy the pair rows with the reference log-probs added; atomic (tmp file + rename)."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    with open(tmp, "w") as f:
        for path in data_paths:
            for row, _ in iter_rows(path):
                row = dict(row)
                row["ref_chosen_logp"], row["ref_rejected_logp"] = scores[n]
                f.write(json.dumps(row) + "\n")
                n += 1
    if n != len(scores):
        raise RuntimeError(f"scored {len(scores)} pairs but the data has {n} rows")
    tmp.replace(out)
    return n
