"""tools/benchmark_memory.py: its saved-for-backward count is exact on known ops, grows by the same
amount with each identical layer, and shows the fused norm + SwiGLU keeping less per layer than the
`transformers` baseline."""

from __future__ import annotations

import torch

from tools.benchmark_memory import SavedBytes, baseline_saved, ours_saved


def test_count_is_exact_and_skips_weights():
    w = torch.nn.Parameter(torch.randn(8, 8))
    x = torch.randn(4, 8, requires_grad=True)
    with SavedBytes([w]) as sb:
        h = x @ w  # saves x and w
        torch.sigmoid(h)  # saves its output (a new 4x8 tensor)
    assert sb.total == 2 * 4 * 8 * 4  # x and sigmoid's output; w is a weight


def test_attention_counted_as_flash_keeps_it():
    """q, k, v, the output and one fp32 log-sum-exp per query row; never the 5 x 5 probabilities."""
    q, k, v = (torch.randn(1, 2, 5, 4, requires_grad=True) for _ in range(3))
    with SavedBytes([]) as sb:
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert sb.total == 4 * (2 * 5 * 4 * 4) + 2 * 5 * 4


def test_linear_in_layers_and_leaner_than_baseline(megatron_world):
    from megatron_redi.data.tiny_assets import TINY_QWEN2_CONFIG

    cfg = lambda n: dict(TINY_QWEN2_CONFIG, vocab_size=384, num_hidden_layers=n)
    ours = [ours_saved(cfg(n), 256)[0] for n in (1, 2, 3)]
    base = [baseline_saved(cfg(n), 256)[0] for n in (1, 2, 3)]
    assert ours[2] - ours[1] == ours[1] - ours[0] > 0
    assert base[2] - base[1] == base[1] - base[0] > 0
    assert ours[1] - ours[0] < base[1] - base[0]


def test_mlp_recompute_keeps_only_the_mlp_input(megatron_world):
    """Selective recompute of the MLP: per layer and token, fc1's output (2 x ffn) and SwiGLU's output
    (ffn) are no longer kept: 3 x ffn bf16 values fewer (the MLP input stays, fc1 kept it anyway)."""
    from megatron_redi.data.tiny_assets import TINY_QWEN2_CONFIG

    cfg = lambda n: dict(TINY_QWEN2_CONFIG, vocab_size=384, num_hidden_layers=n)
    per_layer = lambda mods: ours_saved(cfg(2), 256, mods)[0] - ours_saved(cfg(1), 256, mods)[0]
    ffn = TINY_QWEN2_CONFIG["intermediate_size"]
    assert per_layer(None) - per_layer(["mlp"]) == 256 * 3 * ffn * 2
