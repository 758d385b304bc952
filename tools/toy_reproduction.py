#!/usr/bin/env python
"""The paper's comparison at toy scale, on CPU: a synthetic teacher's correct and incorrect traces of
column arithmetic -> dataset builder -> Stage 1 SFT -> Stage 2 with DPO, SimPO, symmetric REDI, REDI
(and an alpha = 0 control) for several seeds -> HF export -> pass@1 on held-out problems.

    python tools/toy_reproduction.py --output runs/toy            # the full table, about 27 min on 2 cores
    python tools/toy_reproduction.py --quick --output runs/quick  # SFT then REDI, before/after (README)

Writes OUT/results.json, OUT/results.md and OUT/results.png (OUT/curves.png with --quick). An interrupted
run continues where it stopped when started again with the same --output. docs/TOY.md has the design
and the measured results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_redi.toy.config import LAYOUTS, METHODS, ToyConfig  # noqa: E402
from megatron_redi.toy.pipeline import Pipeline, StepFailed  # noqa: E402
from megatron_redi.toy.report import error_table, markdown_table, plot_results, summarize  # noqa: E402


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="folder for data, checkpoints, evaluations and results")
    p.add_argument("--quick", action="store_true", help="SFT then REDI only, one seed (the README's main job)")
    p.add_argument("--seeds", type=_ints, default=None, help="Stage 2 / sampling seeds (default 1,2,3)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated Stage 2 methods (default: all of {','.join(METHODS)})")
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="dp2",
                   help="how the 2 processes of every training and scoring run split the work (default dp2)")
    p.add_argument("--stage2-lr", type=float, default=None, help="Stage 2 learning rate of every method "
                   f"(default {ToyConfig().stage2_lr:g})")
    p.add_argument("--reuse-sft", default=None, metavar="OTHER_OUTPUT",
                   help="start from another run's data, SFT checkpoint and SFT evaluations (same Stage 1 settings)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the Stage 2 Megatron checkpoints (the SFT one and the HF exports are always kept)")
    return p.parse_args(argv)


def _quick_report(cfg: ToyConfig, res: dict, out: Path) -> str:
    from megatron_redi.training.curves import plot, read_metrics

    sft = next(r for r in res["runs"] if r["method"] == "sft")
    redi = next(r for r in res["runs"] if r["method"] == "redi")
    lines = ["| model | held-out pass@1 (%) ± SEM |", "|---|---|",
             f"| before: SFT (Stage 1) | {sft['pass@1']:.1f} ± {sft['sem']:.1f} |",
             f"| after: REDI (alpha 0.8, Stage 2) | {redi['pass@1']:.1f} ± {redi['sem']:.1f} |"]
    stages = {"sft": read_metrics(res["sft_metrics"]), "redi": read_metrics(next(iter(res["curves"].values())))}
    plot(stages, out / "curves.png", stages=True,
         evals={"sft": (sft["pass@1"], sft["sem"]), "redi": (redi["pass@1"], redi["sem"])})
    note = (f"{cfg.heldout_problems} held-out problems x n = {cfg.eval_n} samples (T {cfg.eval_temperature}); "
            "SEM over the n per-sample-index accuracies. One seed: docs/TOY.md has the full comparison "
            "over seeds, with the control that tells the negatives' effect from more training.")
    return "\n".join(lines) + "\n\n" + note


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    cfg = ToyConfig()
    if a.quick:
        cfg = cfg.quick()
    try:
        if a.seeds is not None:
            cfg = replace(cfg, seeds=a.seeds)
        cfg = replace(cfg, parallel_flags=LAYOUTS[a.layout])
        if a.stage2_lr is not None:
            cfg = replace(cfg, stage2_lr=a.stage2_lr)
        if a.methods is not None:
            cfg = replace(cfg, methods=tuple(m for m in a.methods.split(",") if m))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.output)
    start = time.monotonic()
    pipe = Pipeline(cfg, out)
    try:
        pipe.check_folder()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if a.reuse_sft:
            pipe.reuse_stage1(a.reuse_sft)
        res = pipe.run()
    except (StepFailed, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not a.keep_checkpoints:
        pipe.clean()
    if a.quick:
        text = _quick_report(cfg, res, out)
        picture = out / "curves.png"
    else:
        rows = summarize(res["runs"])
        res["table"] = rows
        text = markdown_table(rows, cfg.collapse_lr_factor)
        text += (f"\n\n{len(cfg.seeds)} seeds; {cfg.heldout_problems} held-out problems x n = {cfg.eval_n} samples "
                 f"(T {cfg.eval_temperature}, top_p {cfg.eval_top_p}); every Stage 2 run starts from one SFT "
                 f"checkpoint with lr {cfg.stage2_lr:g} for {cfg.stage2_iters} iterations of "
                 f"{cfg.stage2_global_batch} pairs.")
        text += ("\n\nWhere samples first depart from the teacher's correct solution (% of samples, all seeds):\n\n"
                 + error_table(res["runs"], cfg.collapse_lr_factor))
        from megatron_redi.training.curves import read_metrics

        curves = {name: read_metrics(path) for name, path in res["curves"].items()}
        picture = plot_results(rows, curves, out / "results.png", cfg.collapse_lr_factor)
        (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "results.md").write_text(text + "\n")
    print("\n" + text)
    print(f"\nresults: {out / 'results.md'}, {picture}  ({(time.monotonic() - start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
