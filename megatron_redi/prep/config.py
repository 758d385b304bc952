"""The builder's configuration: every rule of the paper's data recipe as a field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from megatron_redi.prep.rules import CORRECT_RULES, REVERIFY_COMBINE


@dataclass
class BuilderConfig:
    """Every rule of the paper's data recipe as a field; the defaults reproduce the paper."""

    input: list[str]
    output_dir: str
    split: str = "train"  # split to read from a `save_to_disk` DatasetDict folder
    # Paper rules.
    valid_values: tuple[str, ...] = ("yes",)  # accepted `problem_is_valid` values; empty = keep all
    exclude_sources: tuple[str, ...] = ("cn_k12",)
    require_label_lengths: bool = True  # False: missing labels count as false, extra ones are ignored
    allow_empty_generations: bool = False
    correct_rule: str = "both"  # both | llama | math_verify | either
    # Length filter (needs a tokenizer); 0 or None disables a bound.
    tokenizer_model: str | None = None
    max_prompt_tokens: int | None = 800
    max_response_tokens: int | None = 19000
    length_filter_sft: bool = False  # the paper filters pairs only
    # Regrading with math-verify.
    reverify: bool = False
    reverify_combine: str = "replace"  # replace | and | or  (with the stored-label rule)
    reverify_workers: int = 0  # 0 = one per CPU
    reverify_timeout: float = 10.0  # seconds per generation
    # Decontamination.
    decontaminate: bool = False
    benchmarks: list[str] | None = None  # JSONL files with `problem`; None = the five bundled sets
    ngram_size: int = 8
    # Output and run control.
    seed: int = 42
    shuffle: bool = True
    strict: bool = False
    batch_size: int = 256
    limit: int | None = None  # stop after this many input rows
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.input, (str, Path)):
            self.input = [str(self.input)]
        if self.correct_rule not in CORRECT_RULES:
            raise ValueError(f"correct_rule must be one of {CORRECT_RULES}, got {self.correct_rule!r}")
        if self.reverify_combine not in REVERIFY_COMBINE:
            raise ValueError(f"reverify_combine must be one of {REVERIFY_COMBINE}, got {self.reverify_combine!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    @property
    def uses_stored_labels(self) -> bool:
        """Stored labels are ignored only when math-verify regrades replace them."""
        return not (self.reverify and self.reverify_combine == "replace")

    @property
    def length_filter_active(self) -> bool:
        return bool(self.tokenizer_model) and bool(self.max_prompt_tokens or self.max_response_tokens)
