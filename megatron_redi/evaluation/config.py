"""Typed configuration of an evaluation run. The CLI only fills these; tests build them directly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from megatron_redi.grading.extraction import Extraction
from megatron_redi.grading.graders import GRADERS

from .benchmarks import DEFAULT_BENCHMARKS, LIST_MODES, LocalFields
from .errors import ConfigError
from .prompts import PromptConfig


@dataclass(frozen=True)
class SamplingConfig:
    """The paper's protocol by default: 16 samples, T = 0.6, top-p = 0.95, 32768 new tokens.
    ``temperature = 0`` means greedy decoding (then ``n`` should be 1)."""

    n: int = 16
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768
    seed: int = 0

    def validate(self) -> None:
        if self.n < 1:
            raise ConfigError(f"--n must be >= 1 (got {self.n})")
        if self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1] (got {self.top_p})")
        if self.max_tokens < 1:
            raise ConfigError(f"--max-tokens must be >= 1 (got {self.max_tokens})")


@dataclass(frozen=True)
class BackendConfig:
    """``name``: auto (vLLM when importable and a GPU is visible, else transformers), vllm or hf.
    ``data_parallel_size`` None: every visible GPU, one vLLM engine per ``tensor_parallel_size`` GPUs.
    ``batch_size``: sequences per transformers ``generate`` call."""

    name: str = "auto"
    tensor_parallel_size: int = 1
    data_parallel_size: int | None = None
    batch_size: int = 16
    device: str = "auto"
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enforce_eager: bool = False

    def validate(self) -> None:
        if self.name not in ("auto", "vllm", "hf"):
            raise ConfigError(f"--backend must be auto, vllm or hf (got {self.name!r})")
        if self.tensor_parallel_size < 1:
            raise ConfigError(f"--tensor-parallel-size must be >= 1 (got {self.tensor_parallel_size})")
        if self.data_parallel_size is not None and self.data_parallel_size < 1:
            raise ConfigError(f"--data-parallel-size must be >= 1 (got {self.data_parallel_size})")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1 (got {self.batch_size})")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"--dtype must be auto, float32, bfloat16 or float16 (got {self.dtype!r})")


@dataclass(frozen=True)
class GradingConfig:
    """``grader`` decides ``correct``; with ``audit`` the other grader runs too and disagreements are
    reported. ``timeout_s`` bounds one sample; ``workers`` 0 grades in-process (None: all cores)."""

    grader: str = "math_verify"
    extraction: str = "boxed"
    audit: bool = False
    require_think: bool = False
    workers: int | None = None
    timeout_s: float = 10.0

    def validate(self) -> None:
        if self.grader not in GRADERS:
            raise ConfigError(f"--grader must be one of {', '.join(GRADERS)} (got {self.grader!r})")
        try:
            Extraction.parse(self.extraction)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--grading-workers must be >= 0 (got {self.workers})")
        if self.timeout_s <= 0:
            raise ConfigError(f"--grading-timeout must be > 0 (got {self.timeout_s})")

    @property
    def graders(self) -> tuple[str, ...]:
        if not self.audit:
            return (self.grader,)
        return (self.grader,) + tuple(g for g in GRADERS if g != self.grader)

    def describe(self) -> dict:
        d = asdict(self)
        d.pop("workers")
        return d


@dataclass
class EvalConfig:
    model: str
    output_dir: str
    benchmarks: list[str] = field(default_factory=lambda: list(DEFAULT_BENCHMARKS))
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    grading: GradingConfig = field(default_factory=GradingConfig)
    fields: LocalFields = field(default_factory=LocalFields)
    limit: int | None = None
    chunk_size: int | None = None
    overwrite: bool = False
    hash_weights: bool = True
    progress: bool = True
    plot: bool = True

    def validate(self) -> None:
        self.sampling.validate()
        self.backend.validate()
        self.grading.validate()
        if not self.benchmarks:
            raise ConfigError("--benchmarks is empty")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1 (got {self.limit})")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ConfigError(f"--chunk-size must be >= 1 (got {self.chunk_size})")
        if self.fields.list_mode not in LIST_MODES:
            raise ConfigError(f"--answer-list-mode must be one of {LIST_MODES}")
