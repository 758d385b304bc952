"""SDPA core attention vs a dense masked reference on the whole sequence, with and without CP.

Documents are laid out so that, under CP 2 (four chunks of 8), one crosses a chunk boundary, one
starts mid-chunk and ends in the next rank's chunk, one lies inside a chunk, and the padding segment
spans the last chunk boundary. Run as a script (under torchrun) this file is the CP worker.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # worker mode: run as a script by torchrun
    sys.path.insert(0, str(ROOT))

from tests.helpers_dist import torchrun  # noqa: E402

S, HEADS, KV_HEADS, DIM = 32, 4, 2, 8
SEGMENTS = [0] * 11 + [1] * 3 + [2] * 9 + [3] * 4 + [4] * 5  # lengths 11, 3, 9, 4, 5 (last = padding)


def _inputs():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(S, 2, HEADS, DIM, generator=g, dtype=torch.float64)
    k = torch.randn(S, 2, KV_HEADS, DIM, generator=g, dtype=torch.float64)
    v = torch.randn(S, 2, KV_HEADS, DIM, generator=g, dtype=torch.float64)
    seg = torch.tensor([SEGMENTS, sorted(SEGMENTS, key=lambda x: -x)])  # row 2: other document order
    grad = torch.randn(S, 2, HEADS * DIM, generator=g, dtype=torch.float64)
    return q, k, v, seg, grad


def _reference(q, k, v, seg):
    """Dense softmax over an explicit causal & same-document mask, GQA by repetition."""
    rep = HEADS // KV_HEADS
    qh, kh, vh = (t.permute(1, 2, 0, 3) for t in (q, k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2)))
    scores = qh @ kh.transpose(-1, -2) / DIM**0.5
    pos = torch.arange(S)
    mask = (pos[None, :] <= pos[:, None])[None] & (seg[:, :, None] == seg[:, None, :])
    scores = scores.masked_fill(~mask[:, None], float("-inf"))
    out = torch.softmax(scores, -1) @ vh
    return out.permute(2, 0, 1, 3).reshape(S, 2, HEADS * DIM)


def _attention():
    from megatron_redi.model.attention import SDPACoreAttention
    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape, transformer_config
    from tests.helpers_dist import TINY

    cfg = transformer_config(Qwen2Shape.from_hf(TINY), ModelBuildConfig())
    return SDPACoreAttention(cfg, 1, None, None, softmax_scale=DIM**-0.5)


def _run(attn, q, k, v, seg, grad):
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = attn(q, k, v, seg)
    (out * grad).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


def _ref_grads(q, k, v, seg, grad):
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = _reference(q, k, v, seg)
    (out * grad).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


def test_packed_documents_one_process(megatron_world):
    q, k, v, seg, grad = _inputs()
    got = _run(_attention(), q, k, v, seg, grad)
    for g, w in zip(got, _ref_grads(q, k, v, seg, grad), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_packed_documents_under_cp2(tmp_path):
    torchrun(__file__, ["cp", str(tmp_path)], nproc=2)
    q, k, v, seg, grad = _inputs()
    want = _ref_grads(q, k, v, seg, grad)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # each rank's K/V gradient is the sum over every rank's queries, sliced to its own positions
    for r, (idx, out, gq, gk, gv) in enumerate(got):
        torch.testing.assert_close(out, want[0][idx], rtol=1e-10, atol=1e-10, msg=f"rank {r} output")
        torch.testing.assert_close(gq, want[1][idx], rtol=1e-10, atol=1e-10, msg=f"rank {r} dq")
        torch.testing.assert_close(gk, want[2][idx], rtol=1e-10, atol=1e-10, msg=f"rank {r} dk")
        torch.testing.assert_close(gv, want[3][idx], rtol=1e-10, atol=1e-10, msg=f"rank {r} dv")


def _worker_cp(out_dir: str) -> None:
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from megatron_redi.model.attention import cp_chunk_positions
    from megatron_redi.platform.distributed import ParallelConfig, destroy, init_distributed, init_model_parallel

    init_distributed()
    init_model_parallel(ParallelConfig(context_parallel_size=2))
    rank = ps.get_context_parallel_rank()
    idx = cp_chunk_positions(S // 2, rank, 2, "cpu")
    q, k, v, seg, grad = _inputs()
    out, gq, gk, gv = _run(_attention(), q[idx], k[idx], v[idx], seg[:, idx], grad[idx])
    torch.save((idx, out, gq, gk, gv), Path(out_dir) / f"rank{dist.get_rank()}.pt")
    destroy()


if __name__ == "__main__":
    if sys.argv[1] == "cp":
        _worker_cp(sys.argv[2])
