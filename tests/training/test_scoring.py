"""Reference scoring for DPO: equal in every layout, equal to a full-logits computation, and a DPO run
started from the scored checkpoint begins at loss ln 2 with zero margin."""

from __future__ import annotations

import json
import math

import pytest
import torch

from megatron_redi.data.dataset import DataConfig, load_examples
from megatron_redi.data.tokenize import TokenizeConfig
from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
from tests.helpers_dist import ROOT, SAMPLE, TINY, read_jsonl, torchrun

pytestmark = pytest.mark.slow  # launches processes (torchrun / tools); `-m 'not slow'` skips them

ARGS = ["--model-config", str(TINY), "--tokenizer-model", str(TINY), "--seq-length", "512", "--seed", "3",
        "--no-progress"]


def test_scores_match_layouts_and_full_logits(tmp_path, megatron_world):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join((SAMPLE / "pairs.jsonl").read_text().splitlines()[:7]) + "\n")
    tool = ROOT / "tools" / "score_reference.py"
    torchrun(tool, [*ARGS, "--data-path", str(data), "--output", str(tmp_path / "one.jsonl")], nproc=1)
    torchrun(tool, [*ARGS, "--data-path", str(data), "--output", str(tmp_path / "dp2.jsonl")], nproc=2)
    torchrun(tool, [*ARGS, "--data-path", str(data), "--output", str(tmp_path / "tp2.jsonl"),
                    "--tensor-model-parallel-size", "2", "--micro-batch-size", "2"], nproc=2)
    one = read_jsonl(tmp_path / "one.jsonl")
    assert len(one) == 7 and [r["chosen"] for r in one] == [json.loads(x)["chosen"] for x in
                                                          data.read_text().splitlines()]
    for other in ("dp2", "tp2"):  # 7 rows over DP2 exercises the uneven last batch
        for a, b in zip(one, read_jsonl(tmp_path / f"{other}.jsonl")):
            for k in ("ref_chosen_logp", "ref_rejected_logp"):
                assert math.isclose(a[k], b[k], rel_tol=1e-5), (other, k)

    from megatron_redi.model.provider import build_model

    shape = Qwen2Shape.from_hf(TINY)
    model = build_model(shape, ModelBuildConfig(), seed=3)  # the weights the tool initialised
    exs, _ = load_examples(DataConfig([str(data)], str(TINY), True, False, TokenizeConfig(seq_length=512)),
                           progress=False)
    for ex, row in zip(exs[:3], one):
        for comp, key in zip(ex.completions, ("ref_chosen_logp", "ref_rejected_logp")):
            ids = torch.tensor([ex.prompt + comp])
            with torch.no_grad():
                logits = model(ids, torch.arange(ids.shape[1])[None], None)[0, :, : shape.vocab_size]
            lp = torch.log_softmax(logits[:-1].float(), -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
            assert math.isclose(lp[len(ex.prompt) - 1 :].sum().item(), row[key], rel_tol=1e-5)


def test_dpo_from_its_own_reference_starts_at_ln2(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join((SAMPLE / "pairs.jsonl").read_text().splitlines()[:8]) + "\n")
    torchrun(ROOT / "tools" / "score_reference.py", [*ARGS, "--data-path", str(data), "--output",
                                                      str(tmp_path / "ref.jsonl")], nproc=1)
    metrics = tmp_path / "m.jsonl"
    torchrun(ROOT / "pretrain_redi.py", [*ARGS, "--data-path", str(tmp_path / "ref.jsonl"), "--loss-type", "dpo",
                                         "--global-batch-size", "4", "--micro-batch-size", "1", "--train-iters",
                                         "1", "--metrics-file", str(metrics), "--tensorboard-dir",
                                         str(tmp_path / "tb")], nproc=2)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))  # TensorBoard scalars were written
    rec = read_jsonl(metrics)[0]
    assert math.isclose(rec["loss"], math.log(2), rel_tol=1e-6)
    # TRL's names for DPO's implicit rewards; against its own reference every reward is 0
    assert abs(rec["rewards/margins"]) < 1e-9 and abs(rec["rewards/chosen"]) < 1e-9
    assert rec["rewards/accuracies"] == 0.0 and "margin" not in rec


def test_scorer_has_its_own_flags(capsys):
    """--load is the scorer's checkpoint; training-only flags are refused by name, not ignored."""
    import pytest

    from megatron_redi.training.arguments import parse_score_args

    base = ["--model-config", str(TINY), "--tokenizer-model", str(TINY), "--data-path", "p.jsonl",
            "--output", "o.jsonl"]
    cfg = parse_score_args([*base, "--load", "/ck/sft", "--tensor-model-parallel-size", "2", "--bf16"])
    assert (cfg.pretrained_checkpoint, cfg.parallel.tensor_model_parallel_size, cfg.model.bf16) == ("/ck/sft", 2, True)
    with pytest.raises(SystemExit):
        parse_score_args([*base, "--loss-type", "dpo", "--global-batch-size", "8"])
    assert "--loss-type --global-batch-size: training flags" in capsys.readouterr().err


def test_scores_from_a_trained_checkpoint_under_pp_and_cp_match_transformers(tmp_path, megatron_world):
    """Score with `--load` of a training --save folder (PP2 and CP2): every row equals `transformers` on
    the same checkpoint exported to HF, and not the seeded random initialisation."""
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join((SAMPLE / "pairs.jsonl").read_text().splitlines()[:5]) + "\n")
    ck = tmp_path / "ck"
    torchrun(ROOT / "pretrain_redi.py", [*ARGS, "--data-path", str(SAMPLE / "sft.jsonl"), "--loss-type", "sft",
                                         "--global-batch-size", "4", "--train-iters", "2", "--lr", "1e-2",
                                         "--lr-warmup-fraction", "0", "--save", str(ck)], nproc=1)
    tool = ROOT / "tools" / "score_reference.py"
    for name, layout in (("pp2", ["--pipeline-model-parallel-size", "2"]), ("cp2", ["--context-parallel-size", "2"])):
        torchrun(tool, [*ARGS, "--load", str(ck), "--data-path", str(data), "--output", str(tmp_path / f"{name}.jsonl"),
                        *layout], nproc=2)
    export = tmp_path / "hf"
    torchrun(ROOT / "tools" / "convert_checkpoint.py", ["mcore-to-hf", "--load", str(ck), "--output", str(export),
                                                        "--no-progress"], nproc=1)

    from transformers import Qwen2ForCausalLM

    hf = Qwen2ForCausalLM.from_pretrained(export, torch_dtype=torch.float32).eval()
    from megatron_redi.model.provider import build_model

    shape = Qwen2Shape.from_hf(TINY)
    random_init = build_model(shape, ModelBuildConfig(), seed=3)
    exs, _ = load_examples(DataConfig([str(data)], str(TINY), True, False, TokenizeConfig(seq_length=512)),
                           progress=False)

    def logp(ids, prompt_len, fwd):
        with torch.no_grad():
            logits = fwd(ids)[0, :, : shape.vocab_size].float()
        lp = torch.log_softmax(logits[:-1], -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        return lp[prompt_len - 1 :].sum().item()

    scored = {n: read_jsonl(tmp_path / f"{n}.jsonl") for n in ("pp2", "cp2")}
    for i, ex in enumerate(exs):
        for comp, key in zip(ex.completions, ("ref_chosen_logp", "ref_rejected_logp")):
            ids = torch.tensor([ex.prompt + comp])
            want = logp(ids, len(ex.prompt), lambda t: hf(t).logits)
            rand = logp(ids, len(ex.prompt), lambda t: random_init(t, torch.arange(t.shape[1])[None], None))
            assert abs(want - rand) > 1e-2 * abs(want)  # the checkpoint is not the initialisation
            for name, rows in scored.items():
                assert math.isclose(rows[i][key], want, rel_tol=1e-5), (name, i, key, rows[i][key], want)


def test_write_scored_refuses_a_row_count_mismatch(tmp_path):
    import pytest

    from megatron_redi.training.scoring import write_scored

    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join((SAMPLE / "pairs.jsonl").read_text().splitlines()[:3]) + "\n")
    for scores in ([(-1.0, -2.0)] * 2, [(-1.0, -2.0)] * 4):
        with pytest.raises(RuntimeError, match=f"scored {len(scores)} pairs but the data has 3 rows"):
            write_scored([str(data)], scores, tmp_path / "out.jsonl")
        assert not list(tmp_path.glob("out.jsonl*"))
    assert write_scored([str(data)], [(-1.0, -2.0)] * 3, tmp_path / "out.jsonl") == 3
