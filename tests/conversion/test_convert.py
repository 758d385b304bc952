"""HF Qwen2 <-> megatron checkpoint conversion, checked against `transformers` itself.

Random tiny Qwen2 models (tied and untied, GQA with 2 KV groups, QKV bias, every weight random incl.
norms and biases) go through tools/convert_checkpoint.py; their megatron logits at TP1, TP2 and PP2
must equal HF's; the export must give back the very same tensors; a model trained one step in megatron
(pretrain_redi.py at TP2) and exported must give in `transformers` the logits megatron gives.

Run as a script (under torchrun) this file is the multi-rank worker that computes megatron logits.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # worker mode: run as a script by torchrun
    sys.path.insert(0, str(ROOT))

from tests.helpers_dist import SAMPLE, TINY, env, torchrun  # noqa: E402

pytestmark = pytest.mark.slow  # launches processes (torchrun / tools); `-m 'not slow'` skips them

CONVERT = ROOT / "tools" / "convert_checkpoint.py"
LAYOUTS = {"tp1": (1, 1), "tp2": (2, 1), "pp2": (1, 2)}
# vocab 300 pads to 384 rows at TP1 but 512 at TP2 (resharding with a different padding); 384 is the
# tiny tokenizer's size, as training needs, and also pads differently at TP1 (none) and TP2
MODELS = {
    "tied": dict(tied=True, vocab=300, dtype=torch.float32, shard="60KB"),
    "untied": dict(tied=False, vocab=384, dtype=torch.float32, shard=None),
    "bf16": dict(tied=True, vocab=300, dtype=torch.bfloat16, shard=None, rope_theta=50000.0),
}
ATOL = 1e-5


# ----------------------------------------------------------------------------------------------- helpers

def _qwen2_config(vocab: int, tied: bool, rope_theta: float = 10000.0):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       rope_theta=rope_theta, tie_word_embeddings=tied, rms_norm_eps=1e-6,
                       bos_token_id=0, eos_token_id=0)


def _make_hf(path: Path, *, tied: bool, vocab: int, dtype: torch.dtype, shard: str | None, seed: int,
             **_) -> Path:
    """A random Qwen2 folder with a tiny tokenizer of its vocabulary. Norm weights around 1 and biases non-zero, so a
    swapped norm or a mis-ordered bias changes the logits."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(_qwen2_config(vocab, tied))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    model.to(dtype).save_pretrained(path, max_shard_size=shard or "1GB")
    if vocab == 384:
        for f in TINY.iterdir():
            if f.name.startswith("tokenizer") or f.name.endswith(".jinja"):
                shutil.copy(f, path / f.name)
    else:  # a tokenizer must never emit ids the embedding lacks (the export refuses that pair)
        from megatron_redi.data.tiny_assets import build_tiny_tokenizer

        build_tiny_tokenizer(path, vocab_size=vocab)
    return path


def _hf_logits(hf_dir: Path, tokens: torch.Tensor, rope_theta: float | None = None) -> torch.Tensor:
    """Reference logits from `transformers` in fp32 (bf16 weights are upcast exactly)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(hf_dir)
    if rope_theta is not None:
        cfg.rope_parameters["rope_theta"] = rope_theta
    model = AutoModelForCausalLM.from_pretrained(hf_dir, config=cfg, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(tokens).logits


def _convert(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """tools/convert_checkpoint.py as a user runs it (its own process, exit status, stderr)."""
    p = subprocess.run([sys.executable, str(CONVERT), *args, "--no-progress"], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"convert {args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n"
                             f"{p.stderr[-5000:]}")
    return p


def _convert_many(jobs: list[list[str]], out: Path) -> list[dict]:
    """Several CLI invocations (`main(argv)`) in one process: megatron is imported once. Run via -c so
    the spawned helper of dist_checkpointing's save does not re-import a heavy __main__."""
    (out / "jobs.json").write_text(json.dumps(jobs))
    code = ("import sys; from tests.conversion.test_convert import _cli_batch; "
            "_cli_batch(sys.argv[1], sys.argv[2])")
    p = subprocess.run([sys.executable, "-c", code, str(out / "jobs.json"), str(out / "results.json")],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise AssertionError(f"conversion batch failed ({p.returncode}):\n{p.stderr[-6000:]}")
    return json.loads((out / "results.json").read_text())


def _cli_batch(jobs_path: str, results_path: str) -> None:
    import runpy

    main = runpy.run_path(str(CONVERT), run_name="convert_checkpoint")["main"]
    results = []
    for argv in json.loads(Path(jobs_path).read_text()):
        try:
            main([*argv, "--no-progress"])
            results.append({"ok": True})
        except (ValueError, FileNotFoundError, RuntimeError) as e:  # what the CLI reports with exit 2
            results.append({"ok": False, "error": str(e)})
    Path(results_path).write_text(json.dumps(results))


def _tensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


# ---------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    """HF models and their reference logits; then, in one process, every conversion: HF -> megatron,
    megatron -> HF (round trips), and an export with a config that does not match the weights."""
    root = tmp_path_factory.mktemp("convert")
    tokens = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(3))
    torch.save(tokens, root / "tokens.pt")
    w: dict = {"root": root, "tokens": tokens, "hf": {}, "mcore": {}, "back": {}, "ref": {}}
    imports, exports = [], []
    for i, (name, spec) in enumerate(MODELS.items()):
        hf = w["hf"][name] = _make_hf(root / f"hf_{name}", seed=i, **spec)
        w["mcore"][name], w["back"][name] = root / f"mcore_{name}", root / f"back_{name}"
        w["ref"][name] = _hf_logits(hf, tokens, spec.get("rope_theta"))
        flags = ["--rope-theta", str(spec["rope_theta"])] if "rope_theta" in spec else []
        imports.append(["hf-to-mcore", "--hf-dir", str(hf), "--output", str(w["mcore"][name]), *flags])
        flags = {"tied": ["--max-shard-size", "50KB"],  # several shards
                 # export-time overrides win over those stored at conversion
                 "bf16": ["--rope-theta", "123456", "--max-position-embeddings", "1024"]}.get(name, [])
        exports.append(["mcore-to-hf", "--load", str(w["mcore"][name]), "--output", str(w["back"][name]),
                        *flags])
    wrong = root / "wrong_config"
    wrong.mkdir()
    cfg = json.loads((w["hf"]["untied"] / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 4}))
    w["wrong_out"] = root / "wrong_out"
    mismatch = ["mcore-to-hf", "--load", str(w["mcore"]["untied"]), "--output", str(w["wrong_out"]),
                "--model-config", str(wrong)]
    results = _convert_many(imports + exports + [mismatch], root)
    assert all(r["ok"] for r in results[:-1]), results
    w["mismatch"] = results[-1]
    return w


@pytest.fixture(scope="module")
def trained(work) -> dict:
    """The untied model trained one SFT step at TP2 from its converted checkpoint, then exported."""
    root = work["root"]
    save = root / "train_save"
    hf = work["hf"]["untied"]
    torchrun(ROOT / "pretrain_redi.py", [
        "--model-config", str(hf), "--tokenizer-model", str(TINY), "--data-path", str(SAMPLE / "sft.jsonl"),
        "--loss-type", "sft", "--global-batch-size", "4", "--micro-batch-size", "2", "--train-iters", "1",
        "--lr", "1e-2", "--lr-warmup-fraction", "0.0", "--seq-length", "512", "--seed", "5",
        "--tensor-model-parallel-size", "2", "--pretrained-checkpoint", str(work["mcore"]["untied"]),
        "--save", str(save), "--no-progress"], nproc=2)
    export = root / "hf_trained"
    _convert("mcore-to-hf", "--load", str(save), "--output", str(export), "--model-config", str(hf),
             "--tokenizer-model", str(TINY))
    return {"save": save, "export": export, "hf_config": hf / "config.json"}


@pytest.fixture(scope="module")
def megatron_logits(work, trained) -> dict[str, torch.Tensor]:
    """Logits of every converted checkpoint (and the trained one) at TP1, TP2 and PP2, from a 2-rank
    run of this file that loads them with training.checkpoint.load_pretrained (the trainer's own loader)."""
    out = work["root"] / "logits"
    out.mkdir(exist_ok=True)
    specs = [f"{n}={work['mcore'][n]}={work['mcore'][n] / 'hf_config.json'}" for n in MODELS]
    specs.append(f"trained={trained['save']}={trained['hf_config']}")
    torchrun(Path(__file__), ["logits", str(out), str(work["root"] / "tokens.pt"), *specs], nproc=2)
    got: dict[str, torch.Tensor] = {}
    for f in out.glob("rank*.pt"):
        got.update(torch.load(f))
    return got


# ------------------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_megatron_logits_equal_hf(work, megatron_logits, name, layout):
    got = megatron_logits[f"{layout}/{name}"]
    ref = work["ref"][name]
    assert got.shape == ref.shape  # padding rows stripped
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_roundtrip_gives_identical_tensors(work, name):
    spec = MODELS[name]
    src, out = work["hf"][name], work["back"][name]
    a, b = _tensors(src), _tensors(out)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype == spec["dtype"], k
        assert torch.equal(a[k], b[k]), k
    assert ("lm_head.weight" in b) == (not spec["tied"])
    if name == "tied":  # several shards, with a consistent index
        index = json.loads((out / "model.safetensors.index.json").read_text())
        files = {f.name for f in out.glob("*.safetensors")}
        assert len(files) > 1 and set(index["weight_map"].values()) == files
        assert set(index["weight_map"]) == set(b)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["torch_dtype"] == {torch.float32: "float32", torch.bfloat16: "bfloat16"}[spec["dtype"]]
    assert cfg["tie_word_embeddings"] == spec["tied"] and cfg["vocab_size"] == spec["vocab"]
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / f).is_file(), f
    from transformers import AutoConfig, AutoTokenizer

    hf_cfg = AutoConfig.from_pretrained(out)
    if name == "bf16":
        assert hf_cfg.rope_parameters["rope_theta"] == 123456 and hf_cfg.max_position_embeddings == 1024
    else:
        assert hf_cfg.rope_parameters["rope_theta"] == 10000.0 and hf_cfg.max_position_embeddings == 256
    assert AutoTokenizer.from_pretrained(out)("1 + 1 = 2")["input_ids"]
    if name == "untied":  # transformers loads the export unchanged and computes the same logits
        torch.testing.assert_close(_hf_logits(out, work["tokens"]), work["ref"][name], atol=0, rtol=0)


def test_trained_model_exports_to_same_logits(work, trained, megatron_logits):
    tokens = work["tokens"]
    exported = _hf_logits(trained["export"], tokens)
    for layout in LAYOUTS:
        torch.testing.assert_close(megatron_logits[f"{layout}/trained"], exported, atol=ATOL, rtol=0)
    # the step really changed the model (else this test could not tell an export of the old weights)
    assert (exported - work["ref"]["untied"]).abs().max() > 1e-3
    before, after = _tensors(work["hf"]["untied"]), _tensors(trained["export"])
    assert sorted(before) == sorted(after)
    assert not torch.equal(before["lm_head.weight"], after["lm_head.weight"])
    assert json.loads((trained["export"] / "config.json").read_text())["vocab_size"] == 384


def test_metadata_stored_with_checkpoint(work):
    """The dist checkpoint carries the HF config (with the --rope-theta override) and tokenizer files."""
    ck = work["mcore"]["bf16"]
    assert json.loads((ck / "hf_config.json").read_text())["rope_theta"] == 50000.0
    assert (ck / "metadata.json").is_file() and (ck / "hf_assets" / "tokenizer.json").is_file()
    meta = json.loads((ck / "redi_conversion.json").read_text())
    assert meta["dtype"] == "bfloat16" and meta["source_hf_dir"] == str(work["hf"]["bf16"].resolve())


def _broken_copy(src: Path, dst: Path, **cfg_changes) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(cfg_changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("case,expect", [
    ("layers", "num_hidden_layers: .* says 3 but the weights .* hold 2 layers"),
    ("hidden", r"model.embed_tokens.weight has shape \[300, 64\]: dim 1 is 64 but hidden_size .* gives 128"),
    ("vocab", r"model.embed_tokens.weight has shape \[300, 64\]: dim 0 is 300 but vocab_size .* gives 320"),
    ("ffn", r"mlp.gate_proj.weight has shape \[96, 64\]: dim 0 is 96 but intermediate_size .* gives 128"),
    ("kv_heads", r"k_proj.weight has shape \[32, 64\]: dim 0 is 32 but num_key_value_heads\*head_dim .* 16"),
    ("untied", r"missing tensors \['lm_head.weight'\] \(tie_word_embeddings is false"),
    ("arch", "expected a Qwen2 model .* model_type='llama'"),
    ("missing_shard", r"shard\(s\) \['model-00002-of-0000\d.safetensors'\] listed in .* are missing"),
])
def test_hf_checkpoint_mismatch_is_named(work, tmp_path, case, expect):
    from megatron_redi.conversion.convert import ConversionError, inspect_hf

    src = work["hf"]["tied"]
    changes = {"layers": {"num_hidden_layers": 3}, "hidden": {"hidden_size": 128, "num_attention_heads": 8},
               "vocab": {"vocab_size": 320}, "ffn": {"intermediate_size": 128},
               "kv_heads": {"num_key_value_heads": 1}, "untied": {"tie_word_embeddings": False},
               "arch": {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}}.get(case, {})
    broken = _broken_copy(src, tmp_path / "hf", **changes)
    if case == "missing_shard":
        next(broken.glob("model-00002-of-*.safetensors")).unlink()
    with pytest.raises(ConversionError, match=expect):
        inspect_hf(broken)


def test_mcore_checkpoint_mismatch_is_named(work):
    """Export with a config that disagrees with the stored weights: the field is named, no output."""
    r = work["mismatch"]
    assert not r["ok"]
    assert "num_hidden_layers:" in r["error"], r
    assert "says 4 but" in r["error"] and "holds 2 layers" in r["error"], r
    assert not work["wrong_out"].exists()


def test_cli_error_exit_status(work, tmp_path):
    """The CLI reports a bad input with exit status 2 and one clear line, and writes nothing."""
    broken = _broken_copy(work["hf"]["tied"], tmp_path / "hf")
    next(broken.glob("model-00002-of-*.safetensors")).unlink()
    out = tmp_path / "out"
    p = _convert("hf-to-mcore", "--hf-dir", str(broken), "--output", str(out), check=False)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "error:" in p.stderr and "are missing" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


@pytest.mark.parametrize("field,value,expect", [
    ("hidden_size", 128, "hidden_size: .* says 128 but embedding.word_embeddings.weight .* has 64 columns"),
    ("vocab_size", 1000, "vocab_size: .* says 1000 but embedding.word_embeddings.weight .* only 384 rows"),
    ("intermediate_size", 64, r"linear_fc1.weight .* dim 1 is 192 but 2\*intermediate_size .* gives 128"),
    ("tie_word_embeddings", False, "tie_word_embeddings: .* says false but .* has no output_layer.weight"),
])
def test_checkpoint_metadata_checker_names_field(field, value, expect):
    """`_check_against_checkpoint` on the metadata megatron would store for the tiny tied model."""
    from types import SimpleNamespace

    from megatron_redi.conversion.convert import ConversionError, _check_against_checkpoint
    from megatron_redi.conversion.hf_mapping import Dims, mcore_checkpoint_shapes
    from megatron_redi.model.config import Qwen2Shape

    good = Qwen2Shape.from_hf(_qwen2_config(300, True).to_dict())
    meta = {k: SimpleNamespace(global_shape=tuple(s for s, _ in v), dtype=torch.float32)
            for k, v in mcore_checkpoint_shapes(Dims.from_shape(good)).items()}
    meta["embedding.word_embeddings.weight"].global_shape = (384, 64)  # TP1 padding
    assert set(_check_against_checkpoint(meta, good, "cfg", Path("ck"))) == set(meta)
    te_norm, local_norm = "self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight"
    local = {k.replace(te_norm, local_norm): v for k, v in meta.items()}  # local-spec key names
    found = _check_against_checkpoint(local, good, "cfg", Path("ck"))
    assert found[f"decoder.layers.{te_norm}"] == f"decoder.layers.{local_norm}"
    bad = Qwen2Shape.from_hf({**_qwen2_config(300, True).to_dict(), field: value})
    with pytest.raises(ConversionError, match=expect):
        _check_against_checkpoint(meta, bad, "cfg", Path("ck"))


def test_mapping_inverts_and_matches_megatron_group_layout():
    """QKV interleave on a hand-checked example: per KV group [q heads of the group ; k ; v]; the norms
    map from both the TE-fused and the local-spec megatron names."""
    from megatron_redi.conversion.hf_mapping import (
        Dims,
        hf_from_megatron,
        qkv_from_megatron,
        qkv_to_megatron,
    )

    d = Dims(vocab=8, hidden=8, ffn=4, layers=1, heads=4, kv_heads=2, tied=True)  # head_dim 2
    q = torch.arange(8.0)  # heads 0..3, 2 values each
    k, v = 100 + torch.arange(4.0), 200 + torch.arange(4.0)
    fused = qkv_to_megatron(q, k, v, d)
    assert fused.tolist() == [0, 1, 2, 3, 100, 101, 200, 201, 4, 5, 6, 7, 102, 103, 202, 203]
    assert all(torch.equal(a, b) for a, b in zip(qkv_from_megatron(fused, d), (q, k, v)))
    w = torch.ones(8)
    for te, local, hf in [("self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight",
                           "input_layernorm.weight"),
                          ("mlp.linear_fc1.layer_norm_weight", "pre_mlp_layernorm.weight",
                           "post_attention_layernorm.weight")]:
        for name in (te, local):
            got = [n for n, _ in hf_from_megatron(f"decoder.layers.3.{name}", w, d)]
            assert got == [f"model.layers.3.{hf}"], name


# -------------------------------------------------------------------------------------- torchrun worker

def _worker_logits(out_dir: str, tokens_path: str, specs: list[str]) -> None:
    """Each `name=checkpoint=hf_config` at every layout of LAYOUTS that fits the world; each rank
    holding final logits saves them (vocab padding stripped) to out_dir/rank{r}.pt."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model
    from megatron_redi.platform.distributed import (
        ParallelConfig,
        destroy,
        init_distributed,
        init_model_parallel,
        set_seed,
    )
    from megatron_redi.training.checkpoint import load_pretrained

    init_distributed()
    tokens = torch.load(tokens_path)
    b, s = tokens.shape
    pos = torch.arange(s).expand(b, s)
    results: dict[str, torch.Tensor] = {}
    for layout, (tp, pp) in LAYOUTS.items():
        init_model_parallel(ParallelConfig(tp, pp))
        set_seed(11)
        first, last = ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage()
        for spec in specs:
            name, ckpt, cfg = spec.split("=")
            shape = Qwen2Shape.from_hf(cfg)
            model = build_model(shape, ModelBuildConfig(tp, pp, transformer_impl="local"), seed=99,
                                pre_process=first, post_process=last)
            load_pretrained(ckpt, model)
            model.eval()
            with torch.no_grad():
                if not first:
                    hidden = torch.empty(s, b, shape.hidden_size)
                    dist.recv(hidden, src=dist.get_rank() - 1)
                    model.set_input_tensor(hidden)
                y = model(tokens, pos, None)
                if not last:
                    dist.send(y.contiguous(), dst=dist.get_rank() + 1)
                    continue
                if tp > 1:
                    parts = [torch.empty_like(y) for _ in range(tp)]
                    dist.all_gather(parts, y.contiguous(), group=ps.get_tensor_model_parallel_group())
                    y = torch.cat(parts, dim=-1)
            if ps.get_tensor_model_parallel_rank() == 0:
                results[f"{layout}/{name}"] = y[..., : shape.vocab_size].clone()
        ps.destroy_model_parallel()
    torch.save(results, Path(out_dir) / f"rank{dist.get_rank()}.pt")
    destroy()


if __name__ == "__main__":
    if sys.argv[1] == "logits":
        _worker_logits(sys.argv[2], sys.argv[3], sys.argv[4:])


def test_export_refuses_a_tokenizer_larger_than_the_model(work, tmp_path):
    """The 384-token tiny tokenizer beside a 300-token model would emit ids the exported embedding
    lacks: the export stops before writing, naming both."""
    p = _convert("mcore-to-hf", "--load", str(work["mcore"]["tied"]), "--output", str(tmp_path / "x"),
                 "--tokenizer-model", str(TINY), check=False)
    assert p.returncode == 2 and f"tokenizer {TINY} can emit token id 383" in p.stderr, p.stderr[-2000:]
    assert "has vocab_size 300" in p.stderr and not (tmp_path / "x").exists()


def test_export_warns_when_vocab_padding_rows_hold_weights(work, tmp_path):
    """Exporting a 384-token checkpoint with a config that says 300 tokens: rows 300..383 would become
    padding but hold trained weights, so the converter warns, naming the config; the true config
    exports silently."""
    cfg = json.loads((work["hf"]["untied"] / "config.json").read_text())
    small = tmp_path / "small_vocab"
    small.mkdir()
    (small / "config.json").write_text(json.dumps({**cfg, "vocab_size": 300}))
    p = _convert("mcore-to-hf", "--load", str(work["mcore"]["untied"]), "--output", str(tmp_path / "a"),
                 "--model-config", str(small), "--tokenizer-model", str(work["hf"]["tied"]))  # 300 tokens
    assert "warning: padding rows (>= vocab_size 300)" in p.stderr and str(small / "config.json") in p.stderr
    p = _convert("mcore-to-hf", "--load", str(work["mcore"]["untied"]), "--output", str(tmp_path / "b"),
                 "--tokenizer-model", str(TINY))
    assert "warning" not in p.stderr
