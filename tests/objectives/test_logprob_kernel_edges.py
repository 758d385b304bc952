"""The chunked log-prob kernel (objectives/logprobs.py) on what the one-process tests did not reach
(found by mutation testing, docs/MUTATION.md):

- vocab-parallel shards: TP ranks are played by threads of this process, with a stand-in for
  torch.distributed whose all_reduce really reduces (SUM or MAX) over the threads, so every shard's
  vocabulary range, the padded rows of the last shards, and each collective's op and group are checked
  against plain log_softmax over the whole vocabulary;
- the backward: an all-ones incoming gradient, a frozen output matrix, all-zero token weights, and the
  tolerance of the fused path's "is the gradient a multiple of the weights" check.
"""

from __future__ import annotations

import functools
import threading

import pytest
import torch
import torch.distributed as dist

from megatron_redi.objectives import logprobs as lp

MISMATCH = ("vocab_parallel_logprobs: the incoming gradient is not a multiple of the token_weights given to "
            "the forward; pass token_weights only for an objective linear in the log-probs, computed by "
            "Objective.token_weights")


class ThreadedDist:
    """torch.distributed for a TP group whose ranks are threads; the world (group None) has 64 ranks."""

    ReduceOp = dist.ReduceOp

    def __init__(self, size: int):
        self.size, self.group = size, object()
        self.barrier = threading.Barrier(size, timeout=30)
        self.slots: list = [None] * size
        self.local = threading.local()
        self.calls: list = []

    def get_world_size(self, group=None):
        return self.size if group is self.group else 64

    def all_reduce(self, tensor, op=dist.ReduceOp.SUM, group=None):
        self.calls.append((op, group))
        if group is not self.group:
            raise AssertionError("all_reduce outside the TP group")
        if op not in (dist.ReduceOp.SUM, dist.ReduceOp.MAX):
            raise AssertionError(f"unexpected op {op}")
        self.slots[self.local.rank] = tensor.clone()
        self.barrier.wait()
        stacked = torch.stack(self.slots)
        reduced = stacked.sum(0) if op == dist.ReduceOp.SUM else stacked.max(0).values
        self.barrier.wait()
        tensor.copy_(reduced)

    def run(self, rank_fn) -> list:
        """rank_fn(r) in one thread per TP rank; its results by rank. The first error of any rank is raised
        here, after the barrier is broken so no other rank waits for it."""
        results, errors = [None] * self.size, []

        def thread(r):
            try:
                self.local.rank = r
                results[r] = rank_fn(r)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                errors.append(e)
                self.barrier.abort()

        threads = [threading.Thread(target=thread, args=(r,)) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        if errors:
            raise errors[0]
        return results


# the kernel computes logits in fp32 whatever the input dtype
close = functools.partial(torch.testing.assert_close, rtol=1e-5, atol=1e-5)


def _problem(seed=0, s=14, h=6, true_v=7):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(s, h, generator=g, dtype=torch.float64)
    labels = torch.arange(s) % true_v  # every token of the vocabulary, both sides of each shard boundary
    grad = torch.randn(s, generator=g, dtype=torch.float64)
    grad[:3] = 0.0  # a prompt-like stretch
    return hidden, labels, grad


def _reference(hidden, weight, labels, true_v, grad):
    """Plain log_softmax over the true vocabulary, and the gradients of sum(grad * logp)."""
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    logp = torch.log_softmax(h @ w[:true_v].t(), -1).gather(-1, labels[:, None]).squeeze(-1)
    (logp * grad).sum().backward()
    return logp.detach(), h.grad, w.grad


@pytest.mark.parametrize("mode", ["recompute", "fused"])
@pytest.mark.parametrize("tp", [2, 3])
def test_vocab_parallel_shards_match_the_full_vocabulary(monkeypatch, tp, mode):
    # true vocabulary 7, padded to 4 rows per rank: TP 2 -> rank 1 masks its last row;
    # TP 3 -> rank 1 masks its last row and rank 2 holds padding only
    shard, true_v = 4, 7
    hidden, labels, grad = _problem()
    weight = torch.randn(tp * shard, hidden.shape[1], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    want, want_h, want_w = _reference(hidden, weight, labels, true_v, grad)
    fake = ThreadedDist(tp)
    monkeypatch.setattr(lp, "dist", fake)

    def rank(r):
        h = hidden.clone().requires_grad_()
        w = weight[r * shard:(r + 1) * shard].clone().requires_grad_()
        tw = grad / 3 if mode == "fused" else None
        out = lp._ChunkedLogprob.apply(h, w, labels, 5, r * shard, true_v, fake.group, tw)
        (out * grad).sum().backward()
        return out.detach(), (h.grad, w.grad)

    outs, grads = zip(*fake.run(rank))
    for r in range(tp):
        close(outs[r].double(), want)
    # hidden gradients are partial over the vocabulary shards: their sum is the whole gradient
    close(sum(gh for gh, _ in grads), want_h)
    close(torch.cat([gw for _, gw in grads]), want_w)
    assert {op for op, _ in fake.calls} == {dist.ReduceOp.SUM, dist.ReduceOp.MAX}


@pytest.mark.parametrize("size", [None, 1], ids=["no-group", "group-of-one"])
def test_no_collective_without_a_tp_group_of_several_ranks(monkeypatch, size):
    hidden, labels, grad = _problem()
    weight = torch.randn(8, hidden.shape[1], dtype=torch.float64)
    fake = ThreadedDist(1)
    monkeypatch.setattr(lp, "dist", fake)
    fake.local.rank = 0
    group = None if size is None else fake.group
    out = lp._ChunkedLogprob.apply(hidden, weight, labels, 5, 0, 7, group, None)
    assert fake.calls == []  # not over the 64-rank world, not over a group of one
    close(out.double(), _reference(hidden, weight, labels, 7, grad)[0])


def _direct(hidden, weight, labels, tw=None, chunk=4, true_v=7):
    return lp._ChunkedLogprob.apply(hidden, weight, labels, chunk, 0, true_v, None, tw)


def test_recompute_backward_of_an_all_ones_gradient():
    hidden, labels, _ = _problem()
    weight = torch.randn(8, hidden.shape[1], dtype=torch.float64)
    ones = torch.ones(hidden.shape[0], dtype=torch.float64)
    _, want_h, want_w = _reference(hidden, weight, labels, 7, ones)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    _direct(h, w, labels).sum().backward()
    close(h.grad, want_h)
    close(w.grad, want_w)


@pytest.mark.parametrize("fused", [False, True])
def test_frozen_output_matrix_still_gives_hidden_gradients(fused):
    hidden, labels, grad = _problem()
    weight = torch.randn(8, hidden.shape[1], dtype=torch.float64)  # requires no gradient
    _, want_h, _ = _reference(hidden, weight, labels, 7, grad)
    h = hidden.clone().requires_grad_()
    (_direct(h, weight, labels, grad / 2 if fused else None) * grad).sum().backward()
    close(h.grad, want_h)


def test_all_zero_token_weights_give_zero_gradients():
    """A micro-batch without completion tokens: weights 0, incoming gradient 0 -> zero grads, no error."""
    hidden, labels, _ = _problem()
    weight = torch.randn(8, hidden.shape[1], dtype=torch.float64)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    zeros = torch.zeros(hidden.shape[0], dtype=torch.float64)
    out = _direct(h, w, labels, zeros)
    out.backward(torch.zeros_like(out))
    assert torch.equal(h.grad, torch.zeros_like(hidden)) and torch.equal(w.grad, torch.zeros_like(weight))


def _fused_two_tokens():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, 4])
    tw = torch.tensor([1.0, 0.0], dtype=torch.float64)
    return h, w, labels, tw


def test_fused_check_accepts_a_gradient_within_its_tolerance():
    # 1000 x the weights, plus 5e-4 where the weight is 0: within atol = 1e-6 x max|g| = 1e-3
    h, w, labels, tw = _fused_two_tokens()
    out = _direct(h, w, labels, tw, true_v=5)
    out.backward(torch.tensor([1000.0, 5e-4], dtype=torch.float64))
    # the fused path returns 1000 x the gradients of the announced weights (the 5e-4 is ignored)
    _, want_h, want_w = _reference(h.detach(), w.detach(), labels, 5, 1000.0 * tw)
    close(h.grad, want_h)
    close(w.grad, want_w)


@pytest.mark.parametrize("incoming", [[1.0, 0.5], [1.0, 2.0]])
def test_fused_check_refuses_a_gradient_that_is_not_a_multiple(incoming):
    h, w, labels, _ = _fused_two_tokens()
    out = _direct(h, w, labels, torch.tensor([1.0, 1.0], dtype=torch.float64) if incoming[1] == 2.0
                  else torch.tensor([1.0, 0.0], dtype=torch.float64), true_v=5)
    with pytest.raises(RuntimeError) as err:
        out.backward(torch.tensor(incoming, dtype=torch.float64))
    assert str(err.value) == MISMATCH


class FakeParallelState:
    """megatron.core.parallel_state for TP ranks played by the threads of a ThreadedDist."""

    def __init__(self, fake: ThreadedDist):
        self.fake = fake

    def get_tensor_model_parallel_group(self):
        return self.fake.group

    def get_tensor_model_parallel_world_size(self):
        return self.fake.size

    def get_tensor_model_parallel_rank(self):
        return self.fake.local.rank


class FakeTensorParallel:
    """megatron.core.tensor_parallel's region ops, forward only: copy is the identity, the sequence-parallel
    gather concatenates every rank's sequence shard (other ranks' shards enter as constants)."""

    def __init__(self, fake: ThreadedDist):
        self.fake, self.calls = fake, []

    def copy_to_tensor_model_parallel_region(self, input_):
        self.calls.append("copy")
        return input_ * 1

    def gather_from_sequence_parallel_region(self, input_, tensor_parallel_output_grad=True):
        self.calls.append(("gather", tensor_parallel_output_grad))
        fake, r = self.fake, self.fake.local.rank
        fake.slots[r] = input_.detach()
        fake.barrier.wait()
        parts = [input_ if i == r else fake.slots[i] for i in range(fake.size)]
        fake.barrier.wait()
        return torch.cat(parts, 0)


@pytest.mark.parametrize("sequence_parallel", [False, True], ids=["tp2", "tp2-sp"])
def test_vocab_parallel_logprobs_wires_the_tp_group_and_regions(monkeypatch, sequence_parallel):
    import megatron.core

    tp, shard, true_v = 2, 4, 7
    hidden, labels, grad = _problem()  # [s, h]: s = 14 tokens, h = 6 (not the shard size 4)
    s, h = hidden.shape
    weight = torch.randn(tp * shard, h, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    want, want_h, want_w = _reference(hidden, weight, labels, true_v, grad)
    fake = ThreadedDist(tp)
    regions = FakeTensorParallel(fake)
    monkeypatch.setattr(lp, "dist", fake)
    monkeypatch.setattr(megatron.core, "parallel_state", FakeParallelState(fake))
    monkeypatch.setattr(megatron.core, "tensor_parallel", regions)

    def rank(r):
        rows = slice(r * s // tp, (r + 1) * s // tp) if sequence_parallel else slice(None)
        hid = hidden[rows].clone()[:, None, :].requires_grad_()  # [s(/tp), b=1, h]
        w = weight[r * shard:(r + 1) * shard].clone().requires_grad_()
        out = lp.vocab_parallel_logprobs(hid, w, labels[:, None], true_vocab_size=true_v, chunk_size=5,
                                         sequence_parallel=sequence_parallel)
        (out[:, 0] * grad).sum().backward()
        return out.detach()[:, 0], (hid.grad[:, 0], w.grad)

    outs, grads = zip(*fake.run(rank))
    for r in range(tp):
        close(outs[r].double(), want)
    close(torch.cat([gw for _, gw in grads]), want_w)
    if sequence_parallel:
        assert regions.calls == [("gather", True)] * tp
    else:
        assert regions.calls == ["copy"] * tp
        close(sum(gh for gh, _ in grads), want_h)


def test_log_probs_are_fp32_whatever_the_default_dtype():
    hidden, labels, _ = _problem()
    weight = torch.randn(8, hidden.shape[1], dtype=torch.float64)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out = _direct(hidden, weight, labels)
    finally:
        torch.set_default_dtype(old)
    assert out.dtype == torch.float32
