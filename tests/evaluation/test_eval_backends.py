"""Generation backends without a GPU: the transformers backend's batching, padding, stop handling and
seeding, and the backend choice. The vLLM backend itself is tested in test_eval_vllm.py."""

import importlib.util

import pytest
import torch

from megatron_redi.evaluation import backends
from megatron_redi.evaluation.backends import GenRequest, HFBackend, load_tokenizer, shard_round_robin
from megatron_redi.evaluation.cli import main
from megatron_redi.evaluation.config import BackendConfig, SamplingConfig


@pytest.fixture(scope="module")
def hf(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    return HFBackend(str(tiny_model), tok, backends.stop_token_ids(tok, str(tiny_model)),
                     BackendConfig(device="cpu", batch_size=3))


class StubModel:
    """Returns scripted continuations and records what generate() was given."""

    def __init__(self, continuations, config):
        self.continuations = list(continuations)
        self.calls = []
        self.config = config

    def generate(self, input_ids, attention_mask, generation_config):
        self.calls.append((input_ids.clone(), attention_mask.clone(), generation_config))
        new = torch.tensor([self.continuations.pop(0) for _ in range(input_ids.shape[0])])
        return torch.cat([input_ids, new], dim=1)


def test_hf_batching_padding_and_stops(hf, monkeypatch):
    tok = hf.tokenizer
    script = [[70, 71, 0, 0], [72, 2, 0, 0], [73, 74, 75, 76], [77, 0, 0, 0]]
    stub = StubModel(script, hf.model.config)
    monkeypatch.setattr(hf, "model", stub)
    reqs = [GenRequest((5, 6, 7), seed=11), GenRequest((8, 9), seed=12)]
    out = hf.generate(reqs, SamplingConfig(n=2, max_tokens=4, temperature=0.6, top_p=0.95))
    # rows (0,0) (0,1) (1,0) in the first micro-batch of 3, then (1,1)
    assert len(stub.calls) == 2
    ids, mask, cfg = stub.calls[0]
    assert ids.tolist() == [[5, 6, 7], [5, 6, 7], [0, 8, 9]]  # left padding with the pad id
    assert mask.tolist() == [[1, 1, 1], [1, 1, 1], [0, 1, 1]]
    assert stub.calls[1][0].tolist() == [[8, 9]]
    assert (cfg.do_sample, cfg.temperature, cfg.top_p, cfg.top_k) == (True, 0.6, 0.95, 0)
    assert cfg.max_new_tokens == 4
    assert list(cfg.eos_token_id) == [0, 2]
    expected = [[([70, 71, 0], "stop"), ([72, 2], "stop")], [([73, 74, 75, 76], "length"), ([77, 0], "stop")]]
    for got_row, exp_row in zip(out, expected):
        for g, (toks, reason) in zip(got_row, exp_row):
            assert (g.num_tokens, g.finish_reason) == (len(toks), reason)
            assert g.text == tok.decode(toks, skip_special_tokens=True)


def test_hf_greedy_config(hf, monkeypatch):
    stub = StubModel([[70, 0]], hf.model.config)
    monkeypatch.setattr(hf, "model", stub)
    hf.generate([GenRequest((5,), 1)], SamplingConfig(n=1, temperature=0.0, max_tokens=2))
    cfg = stub.calls[0][2]
    assert cfg.do_sample is False and cfg.temperature is None and cfg.top_p is None


def test_hf_max_tokens_clamped_to_model_positions(hf, monkeypatch):
    stub = StubModel([[70, 0]], hf.model.config)
    monkeypatch.setattr(hf, "model", stub)
    monkeypatch.setattr(hf, "max_positions", 5)
    hf.generate([GenRequest((5, 6, 7), 1)], SamplingConfig(n=1, max_tokens=100))
    assert stub.calls[0][2].max_new_tokens == 2


def test_hf_sampling_is_seeded(hf):
    reqs = [GenRequest((5, 6, 7, 8), seed=1), GenRequest((9, 10), seed=2)]
    s = SamplingConfig(n=2, max_tokens=8)
    a, b = hf.generate(reqs, s), hf.generate(reqs, s)
    assert a == b
    c = hf.generate([GenRequest((5, 6, 7, 8), seed=99), reqs[1]], s)
    assert c[0] != a[0]
    assert len({g.text for g in a[0] + a[1]}) > 1  # the samples are different draws


def test_shard_round_robin():
    assert shard_round_robin(7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert shard_round_robin(2, 4) == [[0], [1], [], []]


def test_derive_seed_is_stable_and_spread():
    seeds = {backends.derive_seed(0, "math500", i) for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s < 2**31 for s in seeds)
    assert backends.derive_seed(0, "math500", 3) == backends.derive_seed(0, "math500", 3)
    assert backends.derive_seed(1, "math500", 3) != backends.derive_seed(0, "math500", 3)


def test_auto_backend_choice():
    has_vllm = importlib.util.find_spec("vllm") is not None
    expected = "vllm" if has_vllm and torch.cuda.is_available() else "hf"
    assert backends.resolve_backend_name("auto") == expected
    assert backends.resolve_backend_name("hf") == "hf"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_requested_but_missing(tiny_model, tmp_path, capsys):
    argv = ["--model", str(tiny_model), "--output-dir", str(tmp_path / "o"), "--backend", "vllm",
            "--benchmarks", "aime24", "--limit", "1", "--n", "1", "--no-progress"]
    assert main(argv) == 2
    assert "vLLM is not installed" in capsys.readouterr().err
