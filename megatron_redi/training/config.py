"""The trainer's configuration: one nested dataclass per concern, each validating its own rules.

Layout follows TorchTitan's job config (`cfg.model`, `cfg.parallel`, `cfg.data`, `cfg.objective`,
`cfg.optimizer`, `cfg.training`, `cfg.checkpoint`, `cfg.logging`); the command line that fills it
keeps Megatron's flag names (`training/arguments.py`). Every rule lives in exactly one `validate`:
flag ranges in the section that owns the flag, rules that need the world size in
`TrainConfig.validate(world_size)` (which delegates the layout to `ParallelConfig.validate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from megatron_redi.data.dataset import DataConfig
from megatron_redi.data.tokenize import TokenizeConfig
from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
from megatron_redi.objectives.losses import ObjectiveConfig
from megatron_redi.platform.distributed import ParallelConfig

RECOMPUTE_MODULES = ("core_attn", "layernorm", "mlp")


@dataclass
class ModelArgs:
    """What model to build and how to run it (precision, kernels, activation recompute)."""

    model_config: str = ""  # HF config.json or a folder holding one
    tokenizer_model: str = ""  # local HF tokenizer folder
    rope_theta: float | None = None  # overrides the config's
    max_position_embeddings: int | None = None
    bf16: bool = False
    transformer_impl: str = "auto"  # auto | local | transformer_engine
    fp8_format: str | None = None
    fp8_recipe: str = "delayed"
    first_last_layers_bf16: bool = False
    logprob_chunk_size: int = 0  # tokens per chunk of the LM head's log-prob kernel; 0: from a byte budget
    liger_kernels: list[str] | None = None  # Liger-Kernel Triton kernels (local spec, GPU only)
    recompute_granularity: str | None = None  # None | full | selective
    recompute_modules: list[str] | None = None

    def validate(self) -> None:
        if self.recompute_modules and self.recompute_granularity != "selective":
            raise ValueError(f"--recompute-modules {' '.join(self.recompute_modules)} needs --recompute-granularity "
                             f"selective, got {self.recompute_granularity} (full recompute already covers every "
                             f"module)")
        if self.logprob_chunk_size < 0:
            raise ValueError(f"--logprob-chunk-size must be >= 0 (0: automatic), got {self.logprob_chunk_size}")

    def shape(self) -> Qwen2Shape:
        """The Qwen2 shape from --model-config with --rope-theta / --max-position-embeddings applied."""
        return Qwen2Shape.from_hf(self.model_config, rope_theta=self.rope_theta,
                                  max_position_embeddings=self.max_position_embeddings)

    def build_config(self, parallel: ParallelConfig) -> ModelBuildConfig:
        """How `model.provider.build_model` lays this model out under `parallel`."""
        return ModelBuildConfig(
            tensor_model_parallel_size=parallel.tensor_model_parallel_size,
            pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
            context_parallel_size=parallel.context_parallel_size,
            sequence_parallel=parallel.sequence_parallel,
            bf16=self.bf16,
            recompute_granularity=self.recompute_granularity,
            recompute_modules=tuple(self.recompute_modules) if self.recompute_modules else None,
            transformer_impl=self.transformer_impl,
            fp8_format=self.fp8_format,
            fp8_recipe=self.fp8_recipe,
            first_last_layers_bf16=self.first_last_layers_bf16,
            logprob_chunk_size=self.logprob_chunk_size,
            liger_kernels=tuple(self.liger_kernels or ()),
        )


@dataclass
class DataArgs:
    """Where the examples come from, how they are tokenised, and how they are batched."""

    data_path: list[str] = field(default_factory=list)
    seq_length: int = 4096
    max_prompt_length: int | None = None
    system_prompt: str | None = None
    truncate_long_examples: bool = False  # False: skip examples longer than seq_length (counted)
    min_completion_tokens: int = 1
    keep_identical_pairs: bool = False
    train_on_all_assistant_turns: bool = False
    data_cache_dir: str | None = None
    tokenizer_workers: int = 0  # 0 = automatic
    packing: str = "none"  # none | ffd
    micro_batch_tokens: int | None = None  # ffd bin size; default seq_length (x2 for pairs)
    micro_batch_size: int = 1  # units per micro-batch (packing none)
    global_batch_size: int = 32  # sequences for sft, pairs for the paired losses

    def validate(self) -> None:
        for flag, v in (("--micro-batch-size", self.micro_batch_size),
                        ("--global-batch-size", self.global_batch_size), ("--seq-length", self.seq_length)):
            if v < 1:
                raise ValueError(f"{flag} must be >= 1, got {v}")
        if not 1 <= self.min_completion_tokens < self.seq_length:
            raise ValueError(f"--min-completion-tokens must be in [1, --seq-length), got {self.min_completion_tokens}")
        if self.micro_batch_tokens is not None and self.micro_batch_tokens < 1:
            raise ValueError(f"--micro-batch-tokens must be >= 1, got {self.micro_batch_tokens}")

    def units_per_micro_batch(self) -> int:
        """Units (documents or pairs) one micro-batch holds when the count is fixed (packing none)."""
        return self.micro_batch_size if self.packing == "none" else 1

    def capacity(self, paired: bool) -> int:
        """Tokens per packed micro-batch under --packing ffd."""
        return self.micro_batch_tokens or self.seq_length * (2 if paired else 1)

    def loader_config(self, tokenizer_model: str, objective: ObjectiveConfig) -> DataConfig:
        """What `data.dataset.load_examples` needs to read and tokenise these files for `objective`."""
        return DataConfig(
            data_path=self.data_path,
            tokenizer_model=tokenizer_model,
            paired=objective.paired,
            need_reference=objective.loss_type == "dpo",
            tokenize=TokenizeConfig(max_prompt_length=self.max_prompt_length, seq_length=self.seq_length,
                                    system_prompt=self.system_prompt,
                                    truncate_long_examples=self.truncate_long_examples,
                                    min_completion_tokens=self.min_completion_tokens,
                                    keep_identical_pairs=self.keep_identical_pairs,
                                    all_assistant_turns=self.train_on_all_assistant_turns),
            cache_dir=self.data_cache_dir,
            workers=self.tokenizer_workers,
        )


@dataclass
class OptimizerArgs:
    """AdamW (the paper's 0.9 / 0.999 / 1e-8, weight decay 1e-4, clip 1.0) and its LR schedule."""

    lr: float = 1e-6
    min_lr: float = 0.0
    lr_warmup_fraction: float = 0.1
    lr_decay_style: str = "linear"  # linear | cosine | constant
    weight_decay: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0

    def validate(self) -> None:
        if not 0.0 <= self.lr_warmup_fraction <= 1.0:
            raise ValueError(f"--lr-warmup-fraction must be in [0, 1], got {self.lr_warmup_fraction}")
        if self.min_lr > self.lr:
            raise ValueError(f"--min-lr {self.min_lr} exceeds --lr {self.lr}")


@dataclass
class TrainingArgs:
    """How long to train, the seed, and when to stop early."""

    train_iters: int | None = None
    train_epochs: float | None = None
    seed: int = 42
    exit_interval: int | None = None  # save (if --save) and exit after an iteration divisible by this
    exit_signal_handler: bool = True  # SIGTERM / SIGUSR1 -> finish the step, save, exit 0

    def validate(self) -> None:
        if self.train_iters is None and self.train_epochs is None:
            raise ValueError("give --train-iters or --train-epochs")
        if self.train_iters is not None and self.train_iters < 1:
            raise ValueError(f"--train-iters must be >= 1, got {self.train_iters}")
        if self.train_epochs is not None and self.train_epochs <= 0:
            raise ValueError(f"--train-epochs must be > 0, got {self.train_epochs}")
        if self.exit_interval is not None and self.exit_interval < 1:
            raise ValueError(f"--exit-interval must be >= 1, got {self.exit_interval}")


@dataclass
class CheckpointArgs:
    save: str | None = None
    save_interval: int | None = None
    load: str | None = None
    pretrained_checkpoint: str | None = None  # weights to start from when --load holds no checkpoint yet
    keep_last: int | None = None
    # settings that may differ from the checkpoint's on --load (names as in run_settings(), e.g. seed)
    override_checkpoint_settings: list[str] = field(default_factory=list)
    override_opt_param_scheduler: bool = False  # Megatron's: the new LR / WD schedule flags win
    use_checkpoint_opt_param_scheduler: bool = False  # Megatron's: keep the checkpoint's schedule

    def validate(self) -> None:
        if self.save_interval is not None and not self.save:
            raise ValueError("--save-interval needs --save DIR")
        if self.override_opt_param_scheduler and self.use_checkpoint_opt_param_scheduler:
            raise ValueError("--override-opt_param-scheduler and --use-checkpoint-opt_param-scheduler exclude "
                             "each other")
        # a typo in --load must not silently start from scratch; --load == --save (a requeued job's
        # first run) may not exist yet
        same_as_save = self.save is not None and self.load is not None and \
            Path(self.load).resolve() == Path(self.save).resolve()
        if self.load and not same_as_save and not Path(self.load).exists():
            raise FileNotFoundError(f"--load {self.load} does not exist (to start a new run that later resumes "
                                    f"from its own checkpoints, pass the same folder to --save and --load)")
        if self.load and Path(self.load).exists():
            load = Path(self.load)
            if not load.is_dir():
                raise ValueError(f"--load {load} is a file, not a training --save folder")
            has_iter = any(p.name.startswith("iter_") for p in load.iterdir())
            model_files = [n for n in ("metadata.json", "config.json") if (load / n).is_file()]
            if not has_iter and (model_files or any(load.glob("*.safetensors"))):
                raise ValueError(f"--load {load} holds a model (converted or HF), not a training checkpoint: "
                                 f"start from it with --pretrained-checkpoint (HF folders: convert first with "
                                 f"tools/convert_checkpoint.py hf-to-mcore)")
        if self.save and Path(self.save).exists() and not Path(self.save).is_dir():
            raise ValueError(f"--save {self.save} is a file; give a folder")
        for flag, v in (("--save-interval", self.save_interval), ("--keep-last", self.keep_last)):
            if v is not None and v < 1:
                raise ValueError(f"{flag} must be >= 1, got {v}")


@dataclass
class LoggingArgs:
    log_interval: int = 1
    metrics_file: str | None = None
    tensorboard_dir: str | None = None
    no_progress: bool = False

    def validate(self) -> None:
        if self.log_interval < 1:
            raise ValueError(f"--log-interval must be >= 1, got {self.log_interval}")
        if self.metrics_file and Path(self.metrics_file).is_dir():
            raise ValueError(f"--metrics-file {self.metrics_file} is a folder; give a file path")
        if self.tensorboard_dir and Path(self.tensorboard_dir).exists() and not Path(self.tensorboard_dir).is_dir():
            raise ValueError(f"--tensorboard-dir {self.tensorboard_dir} is a file; give a folder")


@dataclass
class TrainConfig:
    model: ModelArgs = field(default_factory=ModelArgs)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataArgs = field(default_factory=DataArgs)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optimizer: OptimizerArgs = field(default_factory=OptimizerArgs)
    training: TrainingArgs = field(default_factory=TrainingArgs)
    checkpoint: CheckpointArgs = field(default_factory=CheckpointArgs)
    logging: LoggingArgs = field(default_factory=LoggingArgs)

    def validate(self, world_size: int | None = None) -> None:
        """Raise ValueError naming the flag. With `world_size`, also the layout and batch divisibility
        (known only once torch.distributed is up; still before any collective)."""
        for section in (self.model, self.data, self.objective, self.optimizer, self.training, self.checkpoint,
                        self.logging):
            section.validate()
        if world_size is None:
            return
        dp = self.parallel.validate(world_size)
        per_mb = self.data.units_per_micro_batch()
        if self.data.global_batch_size % (per_mb * dp):
            raise ValueError(f"--global-batch-size {self.data.global_batch_size} is not divisible by "
                             f"--micro-batch-size {self.data.micro_batch_size} x data-parallel size {dp}")


@dataclass
class ScoreConfig:
    """What `tools/score_reference.py` takes: the trainer's model, data and parallelism sections, the
    checkpoint to score with and where to write."""

    model: ModelArgs = field(default_factory=ModelArgs)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: DataArgs = field(default_factory=DataArgs)
    pretrained_checkpoint: str | None = None  # None: the seeded random initialisation
    output: str = ""
    overwrite: bool = False  # replace an existing --output
    seed: int = 42
    batch_pairs: int = 64  # pairs per DP rank per schedule call
    no_progress: bool = False

    def validate(self) -> None:
        self.model.validate()
        self.data.validate()
        if self.batch_pairs < 1:
            raise ValueError(f"--batch-pairs must be >= 1, got {self.batch_pairs}")
        out = Path(self.output)
        if out.is_dir():
            raise ValueError(f"--output {out} is a folder; give a JSONL file path")
        inputs = {Path(p).resolve() for p in self.data.data_path}
        if out.exists() and not self.overwrite and out.resolve() not in inputs:
            raise ValueError(f"--output {out} exists; choose a new file or pass --overwrite")
