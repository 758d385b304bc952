"""Per-token log-probs from vocab-parallel logits, chunked over the sequence.

Qwen's vocabulary is 151,936: a 16k+16k pair is ~20 GB of fp32 logits. Here only one chunk of
logits exists at a time, in forward and in backward: forward keeps the per-token log-sum-exp
(one float per token) and backward recomputes each chunk's logits from the hidden states. No
all-gather of the vocabulary: max / sum-exp / target logit are all-reduced over the TP group.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _tp_all_reduce(t: torch.Tensor, op, group) -> torch.Tensor:
    if group is not None and dist.get_world_size(group) > 1:
        dist.all_reduce(t, op=op, group=group)
    return t


def _chunk_stats(h, weight, labels, vocab_start, vocab_end, true_vocab, group):
    """One chunk's (exp(logits - max), sum of those, log-sum-exp, target logit), vocab-parallel.

    The fp32 logits buffer is turned into exp(logits - max) in place, so a chunk costs one [c, v]
    fp32 buffer, and the gradient pass can reuse it instead of exponentiating again."""
    logits = _masked_logits(h, weight, vocab_start, true_vocab)  # [c, v_local]
    in_range = (labels >= vocab_start) & (labels < vocab_end)
    local_idx = (labels - vocab_start).clamp(0, weight.shape[0] - 1)
    tgt = torch.where(in_range, logits.gather(1, local_idx[:, None]).squeeze(1), torch.zeros((), device=h.device))
    gmax = _tp_all_reduce(logits.max(dim=-1).values, dist.ReduceOp.MAX, group)
    expd = logits.sub_(gmax[:, None]).exp_()
    sumexp = _tp_all_reduce(expd.sum(-1), dist.ReduceOp.SUM, group)
    lse = gmax + torch.log(sumexp)
    tgt = _tp_all_reduce(tgt, dist.ReduceOp.SUM, group)
    return expd, sumexp, lse, tgt


def _chunk_grads(h, weight, expd, norm, labels, g, vocab_start, grad_w):
    """Gradients of sum_t g_t * logp_t for one chunk: d logp / d logits = onehot(label) - softmax,
    with softmax = expd / norm (consumed in place). Returns the hidden-state gradient; the weight
    gradient is accumulated into `grad_w`. No host synchronisation (GPU-friendly)."""
    vocab_end = vocab_start + weight.shape[0]
    grad_logits = expd.mul_((-g / norm)[:, None])
    in_range = (labels >= vocab_start) & (labels < vocab_end)
    local_idx = (labels - vocab_start).clamp(0, weight.shape[0] - 1)
    grad_logits.scatter_add_(1, local_idx[:, None], (g * in_range)[:, None])
    grad_logits = grad_logits.to(weight.dtype)
    if grad_w.dtype == grad_logits.dtype:
        grad_w.addmm_(grad_logits.t(), h)  # no [v, h] temporary
    else:
        # fp32 accumulator, bf16 GEMM: add the GEMM's output in place (type-promoting add), no fp32
        # [v, h] copy of it. Fewer, larger chunks (auto chunk size) make this pass rarer.
        grad_w.add_(torch.matmul(grad_logits.t(), h))
    return torch.matmul(grad_logits, weight)


def _has_gradient(g: torch.Tensor) -> bool:
    """Skip prompt-only chunks on CPU; on GPU the check would cost a host sync per chunk."""
    return g.device.type != "cpu" or bool((g != 0).any())


def _masked_logits(h, weight, vocab_start, true_vocab):
    logits = torch.matmul(h, weight.t()).float()
    if true_vocab < vocab_start + weight.shape[0]:
        logits[:, max(true_vocab - vocab_start, 0):] = float("-inf")
    return logits


# Bytes the chunk buffers may take at once when the chunk size is automatic (chunk_size 0).
LOGPROB_CHUNK_BUDGET_BYTES = 3 << 30
CHUNK_MULTIPLE = 256  # GEMM-friendly row count


def auto_chunk_size(tokens: int, vocab_local: int, dtype: torch.dtype, budget_bytes: int | None = None) -> int:
    """Tokens per chunk so that one chunk's buffers fit `budget_bytes`: per logit the fp32 logits
    (exponentiated in place), the GEMM's output in the weight dtype before the fp32 cast, and the
    gradient logits in the weight dtype. A multiple of 256 (at least 256), never more than `tokens`
    (one chunk when the whole sequence fits). Larger chunks mean fewer passes over the [v, h] weight
    gradient; the logits' elementwise work is the same for any chunk size."""
    budget = LOGPROB_CHUNK_BUDGET_BYTES if budget_bytes is None else budget_bytes
    per_row = vocab_local * (4 + 2 * torch.empty((), dtype=dtype).element_size())
    rows = max(budget // per_row // CHUNK_MULTIPLE * CHUNK_MULTIPLE, CHUNK_MULTIPLE)
    return max(min(rows, tokens), 1)


# how many backward passes used the single-pass gradients vs recomputation (for tests and benchmarks)
BACKWARD_PATHS = {"fused": 0, "recompute": 0}


class _ChunkedLogprob(torch.autograd.Function):
    """Forward keeps one float per token (log-sum-exp). When the caller knows the per-token gradient
    up front (`token_weights`: objectives linear in log-probs, i.e. SFT and REDI) the weight and
    hidden gradients are produced in the same pass, so the LM head costs what the naive version
    costs (3 GEMMs) instead of 4; otherwise backward recomputes each chunk's logits."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk, vocab_start, true_vocab, group, token_weights):
        vocab_end = vocab_start + weight.shape[0]
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse_all = torch.empty_like(out)
        fused = token_weights is not None
        if fused:
            grad_h = torch.zeros_like(hidden)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for s in range(0, hidden.shape[0], chunk):
            e = min(s + chunk, hidden.shape[0])
            expd, sumexp, lse, tgt = _chunk_stats(hidden[s:e], weight, labels[s:e], vocab_start, vocab_end,
                                                  true_vocab, group)
            out[s:e] = tgt - lse
            lse_all[s:e] = lse
            if fused and _has_gradient(token_weights[s:e]):
                gh = _chunk_grads(hidden[s:e], weight, expd, sumexp, labels[s:e],
                                  token_weights[s:e].float(), vocab_start, grad_w)
                grad_h[s:e] = gh.to(hidden.dtype)
            del expd
        ctx.chunk, ctx.vocab_start, ctx.true_vocab, ctx.group = chunk, vocab_start, true_vocab, group
        ctx.save_for_backward(hidden, weight, labels, lse_all, token_weights if fused else None)
        # kept off save_for_backward: they are scaled in place and released by the first backward
        ctx.pre = (grad_h, grad_w) if fused else None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, labels, lse_all, w = ctx.saved_tensors
        if ctx.pre is not None:
            pre_h, pre_w = ctx.pre
            ctx.pre = None  # a second backward (retained graph) recomputes
            # The caller promised d loss / d logp = token_weights (up to a scalar such as a loss
            # scale). Anything else means the objective is not the one that produced the weights:
            # refuse rather than return wrong gradients or silently take the slower path.
            w32, g32 = w.float(), grad_out.float()
            denom = (w32 * w32).sum()
            c = (g32 * w32).sum() / denom if denom > 0 else g32.new_zeros(())
            if not torch.allclose(g32, c * w32, rtol=1e-5, atol=1e-12 + 1e-6 * float(g32.abs().max())):
                raise RuntimeError("vocab_parallel_logprobs: the incoming gradient is not a multiple of the "
                                   "token_weights given to the forward; pass token_weights only for an "
                                   "objective linear in the log-probs, computed by Objective.token_weights")
            BACKWARD_PATHS["fused"] += 1
            return (pre_h.mul_(c).to(hidden.dtype), pre_w.mul_(c).to(weight.dtype),
                    None, None, None, None, None, None)
        BACKWARD_PATHS["recompute"] += 1
        grad_h = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for s in range(0, hidden.shape[0], ctx.chunk):
            e = min(s + ctx.chunk, hidden.shape[0])
            g = grad_out[s:e].float()
            if not _has_gradient(g):
                continue  # prompt-only chunk: no gradient flows through it
            h = hidden[s:e]
            expd = _masked_logits(h, weight, ctx.vocab_start, ctx.true_vocab).sub_(lse_all[s:e, None]).exp_()
            gh = _chunk_grads(h, weight, expd, torch.ones_like(g), labels[s:e], g, ctx.vocab_start, grad_w)
            if grad_h is not None:
                grad_h[s:e] = gh.to(hidden.dtype)
        # grad_h is partial over vocab shards: summed over TP by the caller's region op.
        return grad_h, grad_w.to(weight.dtype), None, None, None, None, None, None


def vocab_parallel_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                            true_vocab_size: int, chunk_size: int = 0, sequence_parallel: bool = False,
                            token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """log p(label_t | prefix) for hidden [s, b, h] (output of the final norm) -> [s, b] fp32.

    `weight` is this TP rank's [v_local, h] slice of the output (or tied embedding) matrix.
    `token_weights` [s, b]: the expected d loss / d logp per token, when known before the forward
    (linear objectives); enables the single-pass gradient (see `_ChunkedLogprob`).
    `chunk_size` 0: automatic, from `LOGPROB_CHUNK_BUDGET_BYTES` (`auto_chunk_size`); > 0: that many tokens.
    """
    if chunk_size < 0:
        raise ValueError(f"chunk_size must be >= 0 (0: automatic), got {chunk_size}")
    from megatron.core import parallel_state, tensor_parallel

    group = parallel_state.get_tensor_model_parallel_group()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    if sequence_parallel:
        # gather the sequence shards; backward reduce-scatters, summing the vocab-shard partials
        hidden = tensor_parallel.gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=True)
    elif tp_size > 1:
        # identity forward; backward all-reduces the partial grads over vocab shards
        hidden = tensor_parallel.copy_to_tensor_model_parallel_region(hidden)
    s, b, h = hidden.shape
    vocab_start = parallel_state.get_tensor_model_parallel_rank() * weight.shape[0]
    flat_labels = labels.reshape(-1)  # labels are [s, b], like hidden
    tw = token_weights.reshape(-1) if token_weights is not None else None
    if chunk_size == 0:
        chunk_size = auto_chunk_size(s * b, weight.shape[0], weight.dtype)
    out = _ChunkedLogprob.apply(hidden.reshape(s * b, h), weight, flat_labels, chunk_size, vocab_start,
                                true_vocab_size, group if tp_size > 1 else None, tw)
    return out.view(s, b)
