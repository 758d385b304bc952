"""Megatron-style command line -> typed configs. Everything is validated before any collective."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from megatron_redi.objectives.losses import LOSS_TYPES, ObjectiveConfig


@dataclass
class TrainConfig:
    model_config: str = ""
    tokenizer_model: str = ""
    data_path: list[str] = field(default_factory=list)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    seq_length: int = 4096
    data_cache_dir: str | None = None
    tokenizer_workers: int = 0
    packing: str = "none"
    micro_batch_tokens: int | None = None
    max_prompt_length: int | None = None
    system_prompt: str | None = None
    rope_theta: float | None = None
    max_position_embeddings: int | None = None
    micro_batch_size: int = 1
    global_batch_size: int = 32
    train_iters: int | None = None
    train_epochs: float | None = None
    lr: float = 1e-6
    min_lr: float = 0.0
    lr_warmup_fraction: float = 0.1
    lr_decay_style: str = "linear"
    weight_decay: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    seed: int = 42
    bf16: bool = False
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    context_parallel_size: int = 1
    sequence_parallel: bool = False
    use_distributed_optimizer: bool = False
    recompute_activations: bool = False
    recompute_granularity: str | None = None
    recompute_modules: list[str] | None = None
    transformer_impl: str = "auto"
    fp8_format: str | None = None
    fp8_recipe: str = "delayed"
    first_last_layers_bf16: bool = False
    logprob_chunk_size: int = 1024
    log_interval: int = 1
    metrics_file: str | None = None
    tensorboard_dir: str | None = None
    save: str | None = None
    save_interval: int | None = None
    load: str | None = None
    pretrained_checkpoint: str | None = None
    keep_last: int | None = None
    exit_interval: int | None = None
    exit_signal_handler: bool = True
    no_progress: bool = False


def model_shape(cfg: TrainConfig):
    """The Qwen2 shape from --model-config with the --rope-theta / --max-position-embeddings overrides."""
    from megatron_redi.model.config import Qwen2Shape

    return Qwen2Shape.from_hf(cfg.model_config, rope_theta=cfg.rope_theta,
                              max_position_embeddings=cfg.max_position_embeddings)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="REDI / SFT / SimPO / DPO post-training on megatron-core",
                                allow_abbrev=False)
    g = p.add_argument_group("model and data")
    g.add_argument("--model-config", required=True, help="HF config.json or a folder holding one")
    g.add_argument("--tokenizer-model", required=True, help="local HF tokenizer folder")
    g.add_argument("--data-path", nargs="+", required=True, help="JSONL / Parquet / save_to_disk paths")
    g.add_argument("--seq-length", type=int, default=4096)
    g.add_argument("--max-prompt-length", type=int, default=None)
    g.add_argument("--system-prompt", default=None)
    g.add_argument("--data-cache-dir", default=None,
                   help="tokenisation cache (default $REDI_CACHE_DIR or ~/.cache/megatron_redi/data)")
    g.add_argument("--tokenizer-workers", type=int, default=0, help="tokenisation processes (0 = auto)")
    g.add_argument("--packing", choices=["none", "ffd"], default="none",
                   help="none: --micro-batch-size units per micro-batch; ffd: first-fit-decreasing bins of "
                        "--micro-batch-tokens tokens (padding-free either way)")
    g.add_argument("--micro-batch-tokens", type=int, default=None,
                   help="bin size for --packing ffd (default: --seq-length, x2 for pairs)")
    g.add_argument("--rope-theta", type=float, default=None)
    g.add_argument("--max-position-embeddings", type=int, default=None)
    g = p.add_argument_group("objective")
    g.add_argument("--loss-type", default="redi", help=f"one of {', '.join(LOSS_TYPES)}")
    g.add_argument("--redi-alpha", type=float, default=0.8)
    g.add_argument("--redi-chosen-weight", type=float, default=1.0)
    g.add_argument("--simpo-beta", type=float, default=2.0)
    g.add_argument("--simpo-gamma", type=float, default=1.0)
    g.add_argument("--dpo-beta", type=float, default=0.001)
    g = p.add_argument_group("training")
    g.add_argument("--micro-batch-size", type=int, default=1)
    g.add_argument("--global-batch-size", type=int, default=32,
                   help="sequences for sft, pairs for the paired losses")
    g.add_argument("--train-iters", type=int, default=None)
    g.add_argument("--train-epochs", type=float, default=None)
    g.add_argument("--lr", type=float, default=1e-6)
    g.add_argument("--min-lr", type=float, default=0.0)
    g.add_argument("--lr-warmup-fraction", type=float, default=0.1)
    g.add_argument("--lr-decay-style", choices=["linear", "cosine", "constant"], default="linear")
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--adam-beta1", type=float, default=0.9)
    g.add_argument("--adam-beta2", type=float, default=0.999)
    g.add_argument("--adam-eps", type=float, default=1e-8)
    g.add_argument("--clip-grad", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--bf16", action="store_true")
    g = p.add_argument_group("parallelism")
    g.add_argument("--tensor-model-parallel-size", type=int, default=1)
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    g.add_argument("--context-parallel-size", type=int, default=1)
    g.add_argument("--sequence-parallel", action="store_true")
    g.add_argument("--use-distributed-optimizer", action="store_true")
    g.add_argument("--recompute-activations", action="store_true", help="full recompute of each layer")
    g.add_argument("--recompute-granularity", choices=["full", "selective"], default=None)
    g.add_argument("--recompute-modules", nargs="+", choices=["core_attn", "layernorm", "mlp"], default=None,
                   help="selective recompute of these parts of each layer (implies --recompute-granularity "
                        "selective). mlp keeps only its input (~60%% of a layer's activations at 1.5B shape) "
                        "for ~30%% more layer FLOPs; layernorm (TE only) drops both norm outputs; core_attn "
                        "saves nothing with flash/cuDNN attention")
    g.add_argument("--transformer-impl", choices=["auto", "local", "transformer_engine"], default="auto")
    g.add_argument("--fp8-format", choices=["e4m3", "hybrid"], default=None)
    g.add_argument("--fp8-recipe", choices=["delayed", "tensorwise", "blockwise", "mxfp8"], default="delayed")
    g.add_argument("--first-last-layers-bf16", action="store_true")
    g.add_argument("--logprob-chunk-size", type=int, default=1024)
    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--log-interval", type=int, default=1)
    g.add_argument("--metrics-file", default=None)
    g.add_argument("--tensorboard-dir", default=None)
    g.add_argument("--save", default=None)
    g.add_argument("--save-interval", type=int, default=None)
    g.add_argument("--load", default=None)
    g.add_argument("--pretrained-checkpoint", default=None,
                   help="weights to start from when --load holds no checkpoint yet (so a requeued job can "
                        "rerun the same command)")
    g.add_argument("--keep-last", type=int, default=None)
    g.add_argument("--exit-interval", type=int, default=None,
                   help="save (if --save) and exit after an iteration divisible by this")
    g.add_argument("--no-exit-signal-handler", dest="exit_signal_handler", action="store_false")
    g.add_argument("--no-progress", action="store_true")
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    ns = build_parser().parse_args(argv)
    d = vars(ns)
    obj = ObjectiveConfig(**{k: d.pop(k) for k in ("loss_type", "redi_alpha", "redi_chosen_weight",
                                                     "simpo_beta", "simpo_gamma", "dpo_beta")})
    cfg = TrainConfig(objective=obj, **d)
    if cfg.recompute_activations and cfg.recompute_granularity is None:
        cfg.recompute_granularity = "full"
    if cfg.recompute_modules and cfg.recompute_granularity is None:
        cfg.recompute_granularity = "selective"
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig, world_size: int | None = None) -> None:
    """Flag-level checks; raises ValueError naming the flag."""
    cfg.objective.validate()
    if cfg.train_iters is None and cfg.train_epochs is None:
        raise ValueError("give --train-iters or --train-epochs")
    if cfg.recompute_modules and cfg.recompute_granularity != "selective":
        raise ValueError(f"--recompute-modules {' '.join(cfg.recompute_modules)} needs --recompute-granularity "
                         f"selective, got {cfg.recompute_granularity} (full recompute already covers every module)")
    for flag, v in (("--micro-batch-size", cfg.micro_batch_size), ("--global-batch-size", cfg.global_batch_size),
                    ("--seq-length", cfg.seq_length), ("--log-interval", cfg.log_interval)):
        if v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    if not 0.0 <= cfg.lr_warmup_fraction <= 1.0:
        raise ValueError(f"--lr-warmup-fraction must be in [0, 1], got {cfg.lr_warmup_fraction}")
    if cfg.min_lr > cfg.lr:
        raise ValueError(f"--min-lr {cfg.min_lr} exceeds --lr {cfg.lr}")
    if cfg.micro_batch_tokens is not None and cfg.micro_batch_tokens < 1:
        raise ValueError(f"--micro-batch-tokens must be >= 1, got {cfg.micro_batch_tokens}")
    if cfg.save_interval is not None and not cfg.save:
        raise ValueError("--save-interval needs --save DIR")
    if world_size is not None:
        mp = cfg.tensor_model_parallel_size * cfg.pipeline_model_parallel_size * cfg.context_parallel_size
        if mp < 1 or world_size % mp:
            raise ValueError(f"world size {world_size} is not divisible by --tensor-model-parallel-size x "
                             f"--pipeline-model-parallel-size x --context-parallel-size = {mp}")
        dp = world_size // mp
        per_mb = cfg.micro_batch_size if cfg.packing == "none" else 1
        if cfg.global_batch_size % (per_mb * dp):
            raise ValueError(f"--global-batch-size {cfg.global_batch_size} is not divisible by "
                             f"--micro-batch-size {cfg.micro_batch_size} x data-parallel size {dp}")
