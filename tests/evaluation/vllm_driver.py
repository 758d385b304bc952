"""Run in the vLLM venv by test_eval_vllm.py (not collected by pytest): on ONE loaded vLLM engine,
(1) the evaluation again (runner.run, other chunking) and (2) greedy fp32 generations of the same
prompts; then the transformers backend's greedy generations. One JSON file comes back.

    python tests/evaluation/vllm_driver.py MODEL OUT_DIR RESULT_JSON"""

import json
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(model: str, out_dir: str, result: str) -> None:
    from megatron_redi.evaluation.backends import HFBackend, VLLMBackend, load_tokenizer, stop_token_ids
    from megatron_redi.evaluation.config import BackendConfig, EvalConfig, GradingConfig, SamplingConfig
    from megatron_redi.evaluation.runner import run

    bench = runpy.run_path(str(ROOT / "tools" / "benchmark_eval_backends.py"), run_name="bench")
    tok = load_tokenizer(model)
    stops = stop_token_ids(tok, model)
    sampled = SamplingConfig(n=2, temperature=0.6, top_p=0.95, max_tokens=12, seed=7)
    cfg = EvalConfig(model=model, output_dir=out_dir, benchmarks=["math500", "aime24"], limit=3,
                     sampling=sampled, chunk_size=1, hash_weights=False, progress=False, plot=False,
                     backend=BackendConfig(name="vllm", device="cpu", dtype="float32", max_model_len=1024,
                                           enforce_eager=True),
                     grading=GradingConfig(workers=2))
    engine = VLLMBackend(model, tok, stops, cfg.backend, seed=sampled.seed)
    try:
        run(cfg, backend=engine)
        reqs = bench["requests_for"](model, ["math500", "aime24"], 3, 0, tok)
        greedy = SamplingConfig(n=1, temperature=0.0, max_tokens=24)
        vllm_greedy = bench["measure"](engine, reqs, greedy)
    finally:
        engine.close()
    hf = HFBackend(model, tok, stops, BackendConfig(name="hf", device="cpu", dtype="float32", batch_size=1))
    hf_greedy = bench["measure"](hf, reqs, greedy)
    Path(result).write_text(json.dumps({"prompts": [list(r.prompt_ids) for r in reqs],
                                        "vllm": vllm_greedy, "hf": hf_greedy,
                                        "vllm_describe": engine.describe()}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
