"""Megatron-style command lines -> the nested configs of `training/config.py`.

Every flag's `dest` is the name of a field of one config section, so parsing fills the sections
by name (`_section`), never field by field. The trainer and the reference scorer share the model,
data and parallelism flag groups; each tool has its own parser and `--help`.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from megatron_redi.objectives.losses import LOSS_TYPES, ObjectiveConfig
from megatron_redi.platform.distributed import ParallelConfig
from megatron_redi.training.config import (
    RECOMPUTE_MODULES,
    CheckpointArgs,
    DataArgs,
    LoggingArgs,
    ModelArgs,
    OptimizerArgs,
    ScoreConfig,
    TrainConfig,
    TrainingArgs,
)


def _section(cls, values: dict[str, Any]):
    """An instance of config section `cls` from the parsed values named like its fields."""
    return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model-config", required=True, help="HF config.json or a folder holding one")
    g.add_argument("--tokenizer-model", required=True, help="local HF tokenizer folder")
    g.add_argument("--rope-theta", type=float, default=None)
    g.add_argument("--max-position-embeddings", type=int, default=None)
    g.add_argument("--bf16", action="store_true")
    g.add_argument("--recompute-activations", action="store_true", help="full recompute of each layer")
    g.add_argument("--recompute-granularity", choices=["full", "selective"], default=None)
    g.add_argument("--recompute-modules", nargs="+", choices=list(RECOMPUTE_MODULES), default=None,
                   help="selective recompute of these parts of each layer (implies --recompute-granularity "
                        "selective). mlp keeps only its input (~60%% of a layer's activations at 1.5B shape) "
                        "for ~30%% more layer FLOPs; layernorm (TE only) drops both norm outputs; core_attn "
                        "saves nothing with flash/cuDNN attention")
    g.add_argument("--transformer-impl", choices=["auto", "local", "transformer_engine"], default="auto")
    g.add_argument("--fp8-format", choices=["e4m3", "hybrid"], default=None)
    g.add_argument("--fp8-recipe", choices=["delayed", "tensorwise", "blockwise", "mxfp8"], default="delayed")
    g.add_argument("--first-last-layers-bf16", action="store_true")
    g.add_argument("--logprob-chunk-size", type=int, default=0,
                   help="tokens per chunk of the LM head's log-prob kernel; 0 (default): the largest multiple "
                        "of 256 whose logits fit a 3 GiB budget")
    g.add_argument("--liger-kernels", nargs="+", choices=["rms_norm", "swiglu"], default=None,
                   help="Liger-Kernel Triton kernels in the local spec (CUDA + liger-kernel only; refused "
                        "elsewhere): rms_norm (every RMSNorm), swiglu (the MLP's activation)")


def add_data_args(p: argparse.ArgumentParser, *, global_batch: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data-path", nargs="+", required=True, help="JSONL / Parquet / save_to_disk paths")
    g.add_argument("--seq-length", type=int, default=4096)
    g.add_argument("--max-prompt-length", type=int, default=None)
    g.add_argument("--system-prompt", default=None)
    g.add_argument("--truncate-long-examples", action="store_true",
                   help="cut completions that do not fit --seq-length (keeping their start; the prompt is never "
                        "cut to fit) instead of skipping the example (default: skip, counted in the log)")
    g.add_argument("--min-completion-tokens", type=int, default=1,
                   help="with --truncate-long-examples: skip an example whose prompt leaves less room than this")
    g.add_argument("--keep-identical-pairs", action="store_true",
                   help="train on pairs whose chosen equals rejected (default: skip them, counted in the log)")
    g.add_argument("--train-on-all-assistant-turns", action="store_true",
                   help="SFT 'messages' rows: one example per assistant turn (default: the last turn only)")
    g.add_argument("--data-cache-dir", default=None,
                   help="tokenisation cache (default $REDI_CACHE_DIR or ~/.cache/megatron_redi/data)")
    g.add_argument("--tokenizer-workers", type=int, default=0, help="tokenisation processes (0 = auto)")
    g.add_argument("--micro-batch-size", type=int, default=1)
    if not global_batch:
        return
    g.add_argument("--packing", choices=["none", "ffd"], default="none",
                   help="none: --micro-batch-size units per micro-batch; ffd: first-fit-decreasing bins of "
                        "--micro-batch-tokens tokens (padding-free either way)")
    g.add_argument("--micro-batch-tokens", type=int, default=None,
                   help="bin size for --packing ffd (default: --seq-length, x2 for pairs)")
    g.add_argument("--global-batch-size", type=int, default=32,
                   help="sequences for sft, pairs for the paired losses")


def add_parallel_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("parallelism")
    g.add_argument("--tensor-model-parallel-size", type=int, default=1)
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    g.add_argument("--context-parallel-size", type=int, default=1)
    g.add_argument("--sequence-parallel", action="store_true")
    g.add_argument("--use-distributed-optimizer", action="store_true")
    g.add_argument("--distributed-timeout-minutes", type=float, default=10.0,
                   help="timeout of every collective: a rank whose peer froze or died exits after this long")


def build_parser() -> argparse.ArgumentParser:
    """The trainer's flags (`pretrain_redi.py --help`)."""
    p = argparse.ArgumentParser(description="REDI / SFT / SimPO / DPO post-training on megatron-core",
                                allow_abbrev=False)
    add_model_args(p)
    add_data_args(p)
    g = p.add_argument_group("objective")
    g.add_argument("--loss-type", default="redi", help=f"one of {', '.join(LOSS_TYPES)}")
    g.add_argument("--redi-alpha", type=float, default=0.8)
    g.add_argument("--redi-chosen-weight", type=float, default=1.0)
    g.add_argument("--simpo-beta", type=float, default=2.0)
    g.add_argument("--simpo-gamma", type=float, default=1.0)
    g.add_argument("--dpo-beta", type=float, default=0.001)
    g = p.add_argument_group("optimizer")
    g.add_argument("--lr", type=float, default=1e-6)
    g.add_argument("--min-lr", type=float, default=0.0)
    g.add_argument("--lr-warmup-fraction", type=float, default=0.1)
    g.add_argument("--lr-decay-style", choices=["linear", "cosine", "constant"], default="linear")
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--adam-beta1", type=float, default=0.9)
    g.add_argument("--adam-beta2", type=float, default=0.999)
    g.add_argument("--adam-eps", type=float, default=1e-8)
    g.add_argument("--clip-grad", type=float, default=1.0)
    g = p.add_argument_group("training")
    g.add_argument("--train-iters", type=int, default=None)
    g.add_argument("--train-epochs", type=float, default=None)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--exit-interval", type=int, default=None,
                   help="save (if --save) and exit after an iteration divisible by this")
    g.add_argument("--no-exit-signal-handler", dest="exit_signal_handler", action="store_false")
    add_parallel_args(p)
    g = p.add_argument_group("checkpoints")
    g.add_argument("--save", default=None)
    g.add_argument("--save-interval", type=int, default=None)
    g.add_argument("--load", default=None)
    g.add_argument("--pretrained-checkpoint", default=None,
                   help="weights to start from when --load holds no checkpoint yet (so a requeued job can "
                        "rerun the same command)")
    g.add_argument("--keep-last", type=int, default=None)
    g.add_argument("--override-checkpoint-settings", nargs="+", default=[], metavar="NAME",
                   help="on --load, accept these run settings differing from the checkpoint's (names as the "
                        "mismatch error lists them, e.g. seed global_batch_size data_sha)")
    g.add_argument("--override-opt_param-scheduler", action="store_true",
                   help="on --load, use this command line's LR / weight-decay schedule, not the checkpoint's")
    g.add_argument("--use-checkpoint-opt_param-scheduler", action="store_true",
                   help="on --load, keep the checkpoint's LR / weight-decay schedule whatever the flags say")
    g = p.add_argument_group("logging")
    g.add_argument("--log-interval", type=int, default=1)
    g.add_argument("--metrics-file", default=None)
    g.add_argument("--tensorboard-dir", default=None)
    g.add_argument("--no-progress", action="store_true")
    return p


def model_args_from(values: dict[str, Any]) -> ModelArgs:
    """ModelArgs with --recompute-activations / --recompute-modules turned into a granularity."""
    model = _section(ModelArgs, values)
    if values.get("recompute_activations") and model.recompute_granularity is None:
        model.recompute_granularity = "full"
    if model.recompute_modules and model.recompute_granularity is None:
        model.recompute_granularity = "selective"
    return model


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The trainer's command line -> a validated TrainConfig (ValueError names the flag)."""
    d = vars(build_parser().parse_args(argv))
    cfg = TrainConfig(
        model=model_args_from(d),
        parallel=_section(ParallelConfig, d),
        data=_section(DataArgs, d),
        objective=_section(ObjectiveConfig, d),
        optimizer=_section(OptimizerArgs, d),
        training=_section(TrainingArgs, d),
        checkpoint=_section(CheckpointArgs, d),
        logging=_section(LoggingArgs, d),
    )
    cfg.validate()
    return cfg


def build_score_parser() -> argparse.ArgumentParser:
    """The reference scorer's flags (`tools/score_reference.py --help`): the trainer's model, data and
    parallelism flags, the checkpoint to score with, and the output file."""
    p = argparse.ArgumentParser(description="Score a pair file once with a frozen checkpoint (DPO's reference): "
                                            "adds ref_chosen_logp / ref_rejected_logp to every row",
                                allow_abbrev=False)
    g = p.add_argument_group("scoring")
    g.add_argument("--pretrained-checkpoint", "--load", dest="pretrained_checkpoint", default=None,
                   help="the reference model: a converted HF checkpoint or a training --save folder "
                        "(its newest complete iteration)")
    g.add_argument("--output", required=True, help="JSONL to write (the pair rows with reference log-probs)")
    g.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    g.add_argument("--batch-pairs", type=int, default=64, help="pairs per data-parallel rank per schedule call")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--no-progress", action="store_true")
    add_model_args(p)
    add_data_args(p, global_batch=False)
    add_parallel_args(p)
    return p


def parse_score_args(argv: list[str] | None = None):
    """The scorer's command line -> a validated ScoreConfig. A training-only flag (e.g. from a reused
    training command line) is refused by name rather than silently ignored."""
    parser = build_score_parser()
    ns, rest = parser.parse_known_args(argv)
    if rest:
        training_only = {s for a in build_parser()._actions for s in a.option_strings}
        named = [a.split("=")[0] for a in rest if a.startswith("--")]
        trainer = [a for a in named if a in training_only]
        if trainer:
            parser.error(f"{' '.join(trainer)}: training flags, not taken by the reference scorer "
                         f"(it scores with the model, data and parallelism flags only); drop them")
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    d = vars(ns)
    cfg = ScoreConfig(model=model_args_from(d), parallel=_section(ParallelConfig, d), data=_section(DataArgs, d),
                      **{k: d[k] for k in ("pretrained_checkpoint", "output", "overwrite", "seed", "batch_pairs",
                                           "no_progress")})
    cfg.validate()
    return cfg
