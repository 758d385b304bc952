"""The toy reproduction's settings, fixed before any objective is compared (docs/TOY.md).

Task, model, Stage 1 and Stage 2 budgets, learning rates and the evaluation protocol are the same for
every method and seed; only ``--quick`` (the README's embedded default) shrinks the run, and it compares
SFT with REDI only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from megatron_redi.toy.teacher import TeacherConfig


@dataclass(frozen=True)
class ToyModel:
    """The student: a Qwen2-shaped transformer (about 1M parameters) and a BPE trained on the teacher's text."""

    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 1000  # the BPE stops merging earlier (about 590 tokens) on this small corpus


@dataclass(frozen=True)
class Method:
    """One Stage 2 objective, as ``pretrain_redi.py`` flags."""

    name: str
    label: str
    flags: tuple[str, ...]
    needs_reference: bool = False


# The paper's settings for the objectives' own constants (docs/REDI.md); the learning rate is shared.
METHODS = {
    "dpo": Method("dpo", "DPO", ("--loss-type", "dpo", "--dpo-beta", "0.001"), needs_reference=True),
    "simpo": Method("simpo", "SimPO", ("--loss-type", "simpo", "--simpo-beta", "2", "--simpo-gamma", "1")),
    "redi_sym": Method("redi_sym", "symmetric REDI (alpha 1)", ("--loss-type", "redi", "--redi-alpha", "1.0")),
    "redi": Method("redi", "REDI (alpha 0.8)", ("--loss-type", "redi", "--redi-alpha", "0.8")),
    # Control, not in the paper's table: Stage 2 on the chosen traces alone (alpha 0 = SFT continued), so
    # a gain from the negatives can be told apart from a gain from more training on the positives.
    "sft_more": Method("sft_more", "SFT continued (alpha 0, control)", ("--loss-type", "redi", "--redi-alpha", "0")),
}


# Layouts of the 2 training processes (`--layout`); every layout gives one process's numbers (tests/training).
LAYOUTS = {
    "dp2": (),
    "tp2": ("--tensor-model-parallel-size", "2"),
    "pp2": ("--pipeline-model-parallel-size", "2"),
}


@dataclass(frozen=True)
class ToyConfig:
    """Everything the toy reproduction runs with. ``quick()`` is the embedded default's short version."""

    teacher: TeacherConfig = field(default_factory=lambda: TeacherConfig(min_digits=2, max_digits=3))
    model: ToyModel = field(default_factory=ToyModel)
    train_problems: int = 4000
    heldout_problems: int = 200
    data_seed: int = 0
    # Stage 1 (SFT), one checkpoint every Stage 2 run starts from, as in the paper's ablation.
    sft_epochs: float = 3
    sft_global_batch: int = 8
    sft_lr: float = 1e-3
    sft_seed: int = 42
    # Stage 2: the same budget, schedule and learning rate for every method.
    stage2_iters: int = 200
    stage2_global_batch: int = 8
    # Chosen once, before the comparison, after a REDI pilot at 3e-4 lost chosen log-prob (docs/TOY.md):
    # 1/20 of the SFT peak (the paper uses 1/50).
    stage2_lr: float = 5e-5
    collapse_lr_factor: float = 10.0  # symmetric REDI again at this multiple of stage2_lr (first seed only)
    methods: tuple[str, ...] = ("dpo", "simpo", "redi_sym", "redi", "sft_more")
    seeds: tuple[int, ...] = (1, 2, 3)
    # Evaluation: the paper's sampling (T 0.6, top_p 0.95) at toy length, graded by math-verify.
    eval_n: int = 4
    eval_temperature: float = 0.6
    eval_top_p: float = 0.95
    eval_max_tokens: int = 300
    seq_length: int = 512
    nproc: int = 2
    parallel_flags: tuple[str, ...] = ()  # extra layout flags, e.g. ("--tensor-model-parallel-size", "2")

    def quick(self) -> ToyConfig:
        """The README's main job: SFT then REDI, one seed, pass@1 before and after."""
        return replace(self, methods=("redi",), seeds=(1,), collapse_lr_factor=0.0, heldout_problems=100,
                       stage2_iters=120)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {sorted(METHODS)}")
        if not self.seeds:
            raise ValueError("give at least one seed")
