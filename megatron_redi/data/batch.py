"""Packed micro-batches: the one batch format every loss, layout and data source uses.

All documents of a micro-batch are concatenated into one row (padding-free). Per token:
tokens, labels (next token), loss_mask (label is a completion token), position_ids (reset per
document) and segment_ids (document index; attention never crosses segments; -1 = padding).
Per document: its pair index, whether it is the chosen trace, its completion length and, for DPO,
the frozen reference log-prob. Both traces of a pair are always in the same micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass
class Example:
    """One training unit: an SFT document, or a (chosen, rejected) pair sharing a prompt."""

    prompt: list[int]
    completions: list[list[int]]  # [completion] for SFT, [chosen, rejected] for pairs
    ref_logps: tuple[float, float] | None = None

    @property
    def num_tokens(self) -> int:
        return sum(len(self.prompt) + len(c) for c in self.completions)


@dataclass
class MicroBatch:
    tokens: torch.Tensor  # [b, s] long
    labels: torch.Tensor  # [b, s] long
    loss_mask: torch.Tensor  # [b, s] float
    position_ids: torch.Tensor  # [b, s] long
    segment_ids: torch.Tensor  # [b, s] long
    doc_pair: torch.Tensor  # [D] long: unit index within the micro-batch
    doc_is_chosen: torch.Tensor  # [D] bool (True for SFT documents)
    doc_lengths: torch.Tensor  # [D] float: completion tokens per document (full, before CP split)
    ref_logps: torch.Tensor | None = None  # [D] float (DPO)
    num_units: int = 0  # pairs (or SFT documents) in this micro-batch
    num_real_tokens: int = 0
    # set by the per-document CP split only: boundaries in the whole row, without and with the
    # per-document padding (int32, Transformer Engine's THD cu_seqlens / cu_seqlens_padded)
    cu_seqlens: torch.Tensor | None = None
    cu_seqlens_padded: torch.Tensor | None = None

    def to(self, device) -> MicroBatch:
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        return MicroBatch(**kw)

    def slice_for_cp(self, cp_rank: int, cp_size: int, per_document: bool = False,
                     local_multiple: int = 1) -> MicroBatch:
        """This CP rank's share of the row. Row split (our SDPA attention, which all-gathers K/V with
        the segment ids): rank r keeps row chunks r and 2*cp-1-r, Megatron's load balancing. Per-document
        split (Transformer Engine's THD attention): every document, padding segment included, is padded
        to a multiple of 2*cp and rank r keeps chunks r and 2*cp-1-r of each; pads are masked tokens of
        their document. local_multiple: the per-document split pads the last document further until
        each rank's share is a multiple of it (TP size under sequence parallelism)."""
        if cp_size == 1:
            return self
        if per_document:
            return self._slice_per_document(cp_rank, cp_size, local_multiple)
        s = self.tokens.shape[1]
        assert s % (2 * cp_size) == 0, f"sequence {s} not padded to a multiple of 2 x CP"
        c = s // (2 * cp_size)
        idx = torch.cat([torch.arange(cp_rank * c, (cp_rank + 1) * c),
                         torch.arange((2 * cp_size - 1 - cp_rank) * c, (2 * cp_size - cp_rank) * c)])
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for k in PER_TOKEN:
            kw[k] = kw[k][:, idx.to(kw[k].device)]
        return MicroBatch(**kw)

    def _slice_per_document(self, cp_rank: int, cp_size: int, local_multiple: int) -> MicroBatch:
        if self.tokens.shape[0] != 1:
            raise ValueError("the per-document (THD) CP split needs one packed row per micro-batch")
        runs = segment_runs(self.segment_ids[0].cpu().numpy())
        real = np.array([e - s for s, e in runs])
        padded = -(-real // (2 * cp_size)) * (2 * cp_size)
        while (padded.sum() // cp_size) % local_multiple:
            padded[-1] += 2 * cp_size
        # for each position of the padded row: the original position (-1 for a pad), its document, its
        # offset inside the document
        src = np.full(int(padded.sum()), -1)
        doc = np.repeat(np.arange(len(runs)), padded)
        offset = np.concatenate([np.arange(p) for p in padded])
        starts = np.concatenate([[0], np.cumsum(padded)[:-1]])
        for (s, e), p0 in zip(runs, starts, strict=True):
            src[p0 : p0 + e - s] = np.arange(s, e)
        keep = thd_cp_positions(padded.tolist(), cp_size, cp_rank)
        idx, is_pad = src[keep], src[keep] < 0
        pad_seg = self.segment_ids[0, [s for s, _ in runs]].cpu().numpy()[doc[keep]]
        fill = {"tokens": 0, "labels": 0, "loss_mask": 0.0, "position_ids": offset[keep], "segment_ids": pad_seg}
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for k in PER_TOKEN:
            row = kw[k][0].cpu().numpy()[np.where(is_pad, 0, idx)]
            row = np.where(is_pad, fill[k], row).astype(row.dtype)
            kw[k] = torch.from_numpy(row).unsqueeze(0).to(kw[k].device)
        cum = lambda n: torch.from_numpy(np.concatenate([[0], np.cumsum(n)])).to(torch.int32)
        kw["cu_seqlens"], kw["cu_seqlens_padded"] = cum(real), cum(padded)
        return MicroBatch(**kw)


PER_TOKEN = ("tokens", "labels", "loss_mask", "position_ids", "segment_ids")


def segment_runs(segments: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of equal segment id in one row."""
    change = np.flatnonzero(segments[1:] != segments[:-1]) + 1
    bounds = np.concatenate([[0], change, [segments.size]])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


def thd_cp_positions(padded_lengths: list[int], cp_size: int, cp_rank: int) -> np.ndarray:
    """Positions of the per-document-padded row that `cp_rank` keeps: chunks r and 2*cp-1-r of each
    document, in row order (Transformer Engine's THD load balancing)."""
    out, start = [], 0
    for n in padded_lengths:
        c = n // (2 * cp_size)
        out += [np.arange(start + cp_rank * c, start + (cp_rank + 1) * c),
                np.arange(start + (2 * cp_size - 1 - cp_rank) * c, start + (2 * cp_size - cp_rank) * c)]
        start += n
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def pack(examples: list[Example], pad_to_multiple: int = 1, pad_id: int = 0) -> MicroBatch:
    """Concatenate every document of `examples` into one row (prompt repeated per trace)."""
    toks, labels, mask, pos, seg = [], [], [], [], []
    doc_pair, doc_chosen, doc_len, refs = [], [], [], []
    d = 0
    for u, ex in enumerate(examples):
        prompt = np.asarray(ex.prompt, dtype=np.int64)
        for j, comp in enumerate(ex.completions):
            ids = np.concatenate([prompt, np.asarray(comp, dtype=np.int64)])
            n, p = ids.size, prompt.size
            toks.append(ids)
            labels.append(np.append(ids[1:], pad_id))
            # the label at position i is ids[i+1]: a completion token iff i+1 >= len(prompt)
            m = np.zeros(n, dtype=np.float32)
            m[p - 1 : n - 1] = 1.0
            mask.append(m)
            pos.append(np.arange(n))
            seg.append(np.full(n, d))
            doc_pair.append(u)
            doc_chosen.append(j == 0)
            doc_len.append(float(len(comp)))
            if ex.ref_logps is not None:
                refs.append(ex.ref_logps[j])
            d += 1
    real = int(sum(t.size for t in toks))
    pad = -(-real // pad_to_multiple) * pad_to_multiple - real
    if pad:
        toks.append(np.full(pad, pad_id))
        labels.append(np.full(pad, pad_id))
        mask.append(np.zeros(pad, dtype=np.float32))
        pos.append(np.arange(pad))
        seg.append(np.full(pad, -1))

    def row(parts, dtype):
        return torch.from_numpy(np.concatenate(parts)).to(dtype).unsqueeze(0)

    return MicroBatch(
        tokens=row(toks, torch.long), labels=row(labels, torch.long), loss_mask=row(mask, torch.float32),
        position_ids=row(pos, torch.long), segment_ids=row(seg, torch.long),
        doc_pair=torch.tensor(doc_pair, dtype=torch.long),
        doc_is_chosen=torch.tensor(doc_chosen, dtype=torch.bool),
        doc_lengths=torch.tensor(doc_len, dtype=torch.float32),
        ref_logps=torch.tensor(refs, dtype=torch.float32) if refs else None,
        num_units=len(examples), num_real_tokens=real,
    )
