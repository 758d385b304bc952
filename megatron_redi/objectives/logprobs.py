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
    """fp32 logits of one chunk plus (lse, target logit); padded vocab rows are masked out."""
    logits = torch.matmul(h, weight.t()).float()  # [c, v_local]
    if true_vocab < vocab_end:
        logits[:, max(true_vocab - vocab_start, 0):] = float("-inf")
    local_max = logits.max(dim=-1).values
    gmax = _tp_all_reduce(local_max.clone(), dist.ReduceOp.MAX, group)
    sumexp = torch.exp(logits - gmax[:, None]).sum(-1)
    sumexp = _tp_all_reduce(sumexp, dist.ReduceOp.SUM, group)
    lse = gmax + torch.log(sumexp)
    in_range = (labels >= vocab_start) & (labels < vocab_end)
    local_idx = (labels - vocab_start).clamp(0, weight.shape[0] - 1)
    tgt = torch.where(in_range, logits.gather(1, local_idx[:, None]).squeeze(1), torch.zeros_like(lse))
    tgt = _tp_all_reduce(tgt, dist.ReduceOp.SUM, group)
    return logits, lse, tgt, in_range, local_idx


class _ChunkedLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk, vocab_start, true_vocab, group):
        # hidden: [t, h] (this TP rank sees the full token set); weight: [v_local, h]; labels: [t]
        vocab_end = vocab_start + weight.shape[0]
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse_all = torch.empty_like(out)
        for s in range(0, hidden.shape[0], chunk):
            e = min(s + chunk, hidden.shape[0])
            _, lse, tgt, _, _ = _chunk_stats(hidden[s:e], weight, labels[s:e], vocab_start, vocab_end,
                                             true_vocab, group)
            out[s:e] = tgt - lse
            lse_all[s:e] = lse
        ctx.save_for_backward(hidden, weight, labels, lse_all)
        ctx.chunk, ctx.vocab_start, ctx.true_vocab, ctx.group = chunk, vocab_start, true_vocab, group
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, labels, lse_all = ctx.saved_tensors
        vocab_start = ctx.vocab_start
        vocab_end = vocab_start + weight.shape[0]
        grad_h = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for s in range(0, hidden.shape[0], ctx.chunk):
            e = min(s + ctx.chunk, hidden.shape[0])
            h = hidden[s:e]
            logits = torch.matmul(h, weight.t()).float()
            if ctx.true_vocab < vocab_end:
                logits[:, max(ctx.true_vocab - vocab_start, 0):] = float("-inf")
            g = grad_out[s:e].float()
            # d logp / d logits = onehot(label) - softmax, scaled by the incoming per-token grad
            grad_logits = torch.exp(logits - lse_all[s:e, None]).mul_(-g[:, None])
            lab = labels[s:e]
            in_range = (lab >= vocab_start) & (lab < vocab_end)
            rows = torch.nonzero(in_range).squeeze(1)
            grad_logits[rows, lab[rows] - vocab_start] += g[rows]
            grad_logits = grad_logits.to(weight.dtype)
            if grad_h is not None:
                grad_h[s:e] = torch.matmul(grad_logits, weight).to(hidden.dtype)
            grad_w += torch.matmul(grad_logits.t(), h).float()
        # grad_h is partial over vocab shards: summed over TP by the caller's region op.
        return grad_h, grad_w.to(weight.dtype), None, None, None, None, None


def vocab_parallel_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                            true_vocab_size: int, chunk_size: int = 4096, sequence_parallel: bool = False,
                            ) -> torch.Tensor:
    """log p(label_t | prefix) for hidden [s, b, h] (output of the final norm) -> [s, b] fp32.

    `weight` is this TP rank's [v_local, h] slice of the output (or tied embedding) matrix.
    """
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
    out = _ChunkedLogprob.apply(hidden.reshape(s * b, h), weight, flat_labels, chunk_size, vocab_start,
                                true_vocab_size, group if tp_size > 1 else None)
    return out.view(s, b)
