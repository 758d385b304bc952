"""HF config -> TransformerConfig mapping, FP8 flag plumbing, and the refusals where TE is absent."""

from __future__ import annotations

import json

import pytest
import torch

from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape, transformer_config
from megatron_redi.platform.gpu_features import check_fp8_request
from megatron_redi.training.arguments import parse_args
from tests.helpers_dist import ROOT, SAMPLE, TINY, torchrun


def test_qwen2_fields_and_overrides():
    cfg = json.loads((TINY / "config.json").read_text())
    s = Qwen2Shape.from_hf(cfg, rope_theta=300000, max_position_embeddings=32768)
    assert (s.rope_theta, s.max_position_embeddings) == (300000, 32768)
    tc = transformer_config(s, ModelBuildConfig(tensor_model_parallel_size=2))
    assert tc.num_query_groups == cfg["num_key_value_heads"] and tc.ffn_hidden_size == cfg["intermediate_size"]
    assert tc.add_qkv_bias and not tc.add_bias_linear and tc.gated_linear_unit and tc.normalization == "RMSNorm"
    assert tc.layernorm_epsilon == cfg["rms_norm_eps"] and tc.kv_channels == cfg["hidden_size"] // 4
    assert s.padded_vocab_size(2) % 256 == 0 and s.padded_vocab_size(2) >= s.vocab_size
    with pytest.raises(ValueError, match="model_type"):
        Qwen2Shape.from_hf(dict(cfg, model_type="llama", architectures=["LlamaForCausalLM"]))


def test_fp8_flags_reach_megatron_config():
    args = parse_args(["--model-config", str(TINY), "--tokenizer-model", str(TINY), "--data-path", "x.jsonl",
                       "--train-iters", "1", "--bf16", "--fp8-format", "hybrid", "--fp8-recipe", "blockwise",
                       "--first-last-layers-bf16"])
    tc = transformer_config(Qwen2Shape.from_hf(TINY), ModelBuildConfig(
        bf16=args.model.bf16, fp8_format=args.model.fp8_format, fp8_recipe=args.model.fp8_recipe,
        first_last_layers_bf16=args.model.first_last_layers_bf16))
    assert (tc.fp8, tc.fp8_recipe, tc.bf16, tc.params_dtype) == ("hybrid", "blockwise", True, torch.bfloat16)
    assert tc.first_last_layers_bf16 and tc.num_layers_at_start_in_bf16 == 1 and tc.num_layers_at_end_in_bf16 == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-host refusal")
def test_fp8_and_te_refused_without_te():
    with pytest.raises(RuntimeError, match="--fp8-format"):
        check_fp8_request("e4m3", "auto")
    with pytest.raises(RuntimeError, match="transformer_engine"):
        check_fp8_request(None, "transformer_engine")
    check_fp8_request(None, "auto")  # the default falls back to the local spec quietly


def test_trainer_refuses_fp8_before_doing_work(tmp_path):
    """The refusal comes before any data work: with a --data-path that does not exist, the error is
    still about FP8, and the tokenisation cache folder is never created."""
    cache = tmp_path / "cache"
    p = torchrun(ROOT / "pretrain_redi.py", ["--model-config", str(TINY), "--tokenizer-model", str(TINY),
                                             "--data-path", str(tmp_path / "missing.jsonl"), "--train-iters", "1",
                                             "--data-cache-dir", str(cache), "--fp8-format", "e4m3",
                                             "--no-progress"], nproc=1, check=False)
    assert p.returncode == 2 and "--fp8-format" in p.stderr, p.stderr[-2000:]
    assert "--data-path" not in p.stderr and not cache.exists()


def test_cu_seqlens_for_thd():
    from megatron_redi.data.batch import Example, pack
    from megatron_redi.model.gpt import cu_seqlens_from_segments

    mb = pack([Example([1, 2, 3], [[4, 5], [6]]), Example([7], [[8, 9, 10]])], pad_to_multiple=8)
    # documents of 5, 4 and 4 tokens, then 3 padding tokens as a last segment
    assert cu_seqlens_from_segments(mb.segment_ids).tolist() == [0, 5, 9, 13, 16]


BAD_CONFIGS = [
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}},
     "RoPE type 'yarn'"),
    ({"use_sliding_window": True, "sliding_window": 4096}, "use_sliding_window is true"),
    ({"hidden_act": "gelu"}, "hidden_act is 'gelu'"),
]


@pytest.mark.parametrize("extra,match", BAD_CONFIGS)
def test_configs_this_code_would_not_reproduce_are_refused(tmp_path, extra, match):
    cfg = json.loads((TINY / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **extra}))
    with pytest.raises(ValueError, match=match):
        Qwen2Shape.from_hf(tmp_path)


def test_trainer_scorer_and_converter_refuse_the_same_config(tmp_path):
    """One reader: a YaRN config is refused by all three tools, before any work, with one message."""
    cfg = json.loads((TINY / "config.json").read_text())
    model = tmp_path / "yarn"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({**cfg, **BAD_CONFIGS[0][0]}))
    common = ["--model-config", str(model), "--tokenizer-model", str(TINY), "--data-path",
              str(SAMPLE / "pairs.jsonl"), "--no-progress"]
    runs = {"trainer": (ROOT / "pretrain_redi.py", [*common, "--train-iters", "1"]),
            "scorer": (ROOT / "tools" / "score_reference.py", [*common, "--output", str(tmp_path / "o.jsonl")]),
            "converter": (ROOT / "tools" / "convert_checkpoint.py",
                          ["hf-to-mcore", "--hf-dir", str(model), "--output", str(tmp_path / "m"), "--no-progress"])}
    for name, (script, args) in runs.items():
        p = torchrun(script, args, nproc=1, check=False)
        assert p.returncode == 2, (name, p.stderr[-2000:])
        assert f"{model / 'config.json'}: RoPE type 'yarn'" in p.stderr, (name, p.stderr[-2000:])
