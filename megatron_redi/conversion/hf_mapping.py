"""HF Qwen2 <-> megatron GPTModel tensor layout (pure torch: no megatron, no process group).

Megatron names here are the local-spec parameter names of an unsplit model (TP1/PP1), e.g.
`decoder.layers.3.self_attention.linear_qkv.weight`. The TE spec fuses the two pre-norms into the next
linear (`linear_qkv.layer_norm_weight`, `linear_fc1.layer_norm_weight`); `TE_NORM_NAMES` maps between
the two. Megatron's dist checkpoints use the TE names as keys for both specs (the local spec maps its
norms onto them), with every per-layer tensor stacked along a leading layer axis.

Layouts megatron expects:
- `linear_qkv` rows are grouped per KV (query) group: [q of the group's heads ; k ; v] stacked over
  groups, so a TP split along rows hands each rank whole groups. Same for the bias.
- `linear_fc1` is [gate ; up] (SwiGLU); megatron's checkpoint stores it in this order at any TP.
- embedding / output rows are padded to a multiple of 128 x TP with zero rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

# local-spec norm name -> TE-spec (fused) name, relative to `decoder.layers.{i}.`
TE_NORM_NAMES = {
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}
LOCAL_NORM_NAMES = {v: k for k, v in TE_NORM_NAMES.items()}

# HF per-layer suffix -> (megatron per-layer suffix, part of a fused tensor or None)
LAYER_FROM_HF: dict[str, tuple[str, str | None]] = {
    "input_layernorm.weight": ("input_layernorm.weight", None),
    "self_attn.q_proj.weight": ("self_attention.linear_qkv.weight", "q"),
    "self_attn.k_proj.weight": ("self_attention.linear_qkv.weight", "k"),
    "self_attn.v_proj.weight": ("self_attention.linear_qkv.weight", "v"),
    "self_attn.q_proj.bias": ("self_attention.linear_qkv.bias", "q"),
    "self_attn.k_proj.bias": ("self_attention.linear_qkv.bias", "k"),
    "self_attn.v_proj.bias": ("self_attention.linear_qkv.bias", "v"),
    "self_attn.o_proj.weight": ("self_attention.linear_proj.weight", None),
    "post_attention_layernorm.weight": ("pre_mlp_layernorm.weight", None),
    "mlp.gate_proj.weight": ("mlp.linear_fc1.weight", "gate"),
    "mlp.up_proj.weight": ("mlp.linear_fc1.weight", "up"),
    "mlp.down_proj.weight": ("mlp.linear_fc2.weight", None),
}
FUSED_PARTS = {"self_attention.linear_qkv.weight": ("q", "k", "v"),
               "self_attention.linear_qkv.bias": ("q", "k", "v"),
               "mlp.linear_fc1.weight": ("gate", "up")}
GLOBAL_FROM_HF = {
    "model.embed_tokens.weight": "embedding.word_embeddings.weight",
    "model.norm.weight": "decoder.final_layernorm.weight",
    "lm_head.weight": "output_layer.weight",
}
GLOBAL_TO_HF = {v: k for k, v in GLOBAL_FROM_HF.items()}
# buffers some older exports carry; recomputed by every loader, so skipped
IGNORED_HF = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_MC_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class Dims:
    """The sizes the mapping needs (from `Qwen2Shape`)."""

    vocab: int
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    tied: bool

    @classmethod
    def from_shape(cls, shape) -> Dims:
        return cls(shape.vocab_size, shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers,
                   shape.num_attention_heads, shape.num_key_value_heads, shape.tie_word_embeddings)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def q_per_group(self) -> int:
        return self.heads // self.kv_heads


def hf_expected_shapes(d: Dims) -> dict[str, tuple[tuple[int, str], ...]]:
    """Every tensor an HF Qwen2 checkpoint must hold, as ((size, "config field that sets it"), ...);
    the field names let a mismatch error say which config value disagrees with the weights."""
    H, F, V = (d.hidden, "hidden_size"), (d.ffn, "intermediate_size"), (d.vocab, "vocab_size")
    q = (d.heads * d.head_dim, "num_attention_heads*head_dim")
    kv = (d.kv_heads * d.head_dim, "num_key_value_heads*head_dim")
    out: dict[str, tuple[tuple[int, str], ...]] = {"model.embed_tokens.weight": (V, H),
                                                   "model.norm.weight": (H,)}
    if not d.tied:
        out["lm_head.weight"] = (V, H)
    for i in range(d.layers):
        p = f"model.layers.{i}."
        out.update({
            p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
            p + "self_attn.q_proj.weight": (q, H), p + "self_attn.q_proj.bias": (q,),
            p + "self_attn.k_proj.weight": (kv, H), p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, H), p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (H, q),
            p + "mlp.gate_proj.weight": (F, H), p + "mlp.up_proj.weight": (F, H),
            p + "mlp.down_proj.weight": (H, F),
        })
    return out


# per-layer tensors of megatron's dist checkpoint (TE-style names, which the local spec maps to as well)
MCORE_LAYER_SUFFIXES = (
    "self_attention.linear_qkv.layer_norm_weight", "self_attention.linear_qkv.weight",
    "self_attention.linear_qkv.bias", "self_attention.linear_proj.weight",
    "mlp.linear_fc1.layer_norm_weight", "mlp.linear_fc1.weight", "mlp.linear_fc2.weight",
)
VOCAB_KEYS = ("embedding.word_embeddings.weight", "output_layer.weight")


def mcore_checkpoint_shapes(d: Dims) -> dict[str, tuple[tuple[int, str], ...]]:
    """Global shapes in a megatron dist checkpoint of this model: layer tensors are stacked along a
    leading layer axis; the vocabulary rows of `VOCAB_KEYS` are only a lower bound (TP padding)."""
    H, F, L = (d.hidden, "hidden_size"), (d.ffn, "intermediate_size"), (d.layers, "num_hidden_layers")
    qkv = ((d.heads + 2 * d.kv_heads) * d.head_dim, "(num_attention_heads+2*num_key_value_heads)*head_dim")
    q = (d.heads * d.head_dim, "num_attention_heads*head_dim")
    V = (d.vocab, "vocab_size")
    out = {"embedding.word_embeddings.weight": (V, H)}
    fc1 = (2 * d.ffn, "2*intermediate_size")
    layer = dict(zip(MCORE_LAYER_SUFFIXES, [(H,), (qkv, H), (qkv,), (H, q), (H,), (fc1, H), (H, F)]))
    out.update({f"decoder.layers.{k}": (L, *v) for k, v in layer.items()})
    out["decoder.final_layernorm.weight"] = (H,)
    if not d.tied:
        out["output_layer.weight"] = (V, H)
    return out


def describe_shape_mismatch(name: str, got: tuple[int, ...], expected: tuple[tuple[int, str], ...],
                            config_src: str) -> str | None:
    """None if `got` matches, else a message naming each config field that disagrees."""
    if tuple(got) == tuple(s for s, _ in expected):
        return None
    if len(got) != len(expected):
        return (f"{name} has {len(got)} dims {list(got)}, a Qwen2 model has {len(expected)} "
                f"({[s for s, _ in expected]} from {config_src})")
    diffs = [f"dim {i} is {g} but {field} in {config_src} gives {s}"
             for i, (g, (s, field)) in enumerate(zip(got, expected)) if g != s]
    return f"{name} has shape {list(got)}: " + "; ".join(diffs)


def hf_layer_count(names) -> int:
    """Number of decoder layers present in an HF checkpoint (1 + highest index)."""
    idx = [int(m.group(1)) for n in names if (m := _HF_LAYER.match(n))]
    return max(idx) + 1 if idx else 0


def megatron_target(hf_name: str) -> tuple[str, str | None]:
    """HF tensor name -> (megatron local-spec name, fused part or None). KeyError if not Qwen2."""
    if hf_name in GLOBAL_FROM_HF:
        return GLOBAL_FROM_HF[hf_name], None
    m = _HF_LAYER.match(hf_name)
    if m and m.group(2) in LAYER_FROM_HF:
        suffix, part = LAYER_FROM_HF[m.group(2)]
        return f"decoder.layers.{m.group(1)}.{suffix}", part
    raise KeyError(hf_name)


def local_name(name: str) -> str:
    """TE-spec or local-spec megatron name -> local-spec name."""
    m = _MC_LAYER.match(name)
    if m and m.group(2) in LOCAL_NORM_NAMES:
        return f"decoder.layers.{m.group(1)}.{LOCAL_NORM_NAMES[m.group(2)]}"
    return name


def qkv_to_megatron(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, d: Dims) -> torch.Tensor:
    """Interleave HF q/k/v (weights [out, hidden] or biases [out]) into megatron's per-group rows."""
    g, hd = d.kv_heads, d.head_dim
    rest = q.shape[1:]
    parts = [q.reshape(g, d.q_per_group * hd, *rest), k.reshape(g, hd, *rest), v.reshape(g, hd, *rest)]
    return torch.cat(parts, dim=1).reshape(g * (d.q_per_group + 2) * hd, *rest)


def qkv_from_megatron(qkv: torch.Tensor, d: Dims) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `qkv_to_megatron`; returns contiguous q, k, v."""
    g, hd = d.kv_heads, d.head_dim
    rest = qkv.shape[1:]
    grouped = qkv.reshape(g, (d.q_per_group + 2) * hd, *rest)
    q, k, v = torch.split(grouped, [d.q_per_group * hd, hd, hd], dim=1)
    return (q.reshape(-1, *rest).contiguous(), k.reshape(-1, *rest).contiguous(),
            v.reshape(-1, *rest).contiguous())


def fc1_from_megatron(fc1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[gate ; up] -> separate contiguous tensors (no shared storage: safetensors refuses aliases)."""
    gate, up = torch.chunk(fc1, 2, dim=0)
    return gate.clone(), up.clone()


def pad_vocab(w: torch.Tensor, padded_rows: int) -> torch.Tensor:
    """Append zero rows up to `padded_rows` (no copy if already that size)."""
    if w.shape[0] == padded_rows:
        return w
    if w.shape[0] > padded_rows:
        raise ValueError(f"vocabulary of {w.shape[0]} rows does not fit {padded_rows} padded rows")
    out = torch.zeros((padded_rows, *w.shape[1:]), dtype=w.dtype)
    out[: w.shape[0]] = w
    return out


def strip_vocab(w: torch.Tensor, vocab: int) -> torch.Tensor:
    """Drop megatron's padding rows (a fresh tensor, so the padded one can be freed)."""
    if w.shape[0] < vocab:
        raise ValueError(f"checkpoint has {w.shape[0]} vocabulary rows, config vocab_size is {vocab}")
    return w[:vocab].clone() if w.shape[0] != vocab else w


class HFToMegatron:
    """Maps HF tensors as they stream in. A fused tensor is emitted as soon as all its parts have
    arrived, so pieces wait only until their siblings are read (usually from the same shard)."""

    def __init__(self, d: Dims):
        self.d = d
        self.pending: dict[str, dict[str, torch.Tensor]] = {}

    def add(self, hf_name: str, t: torch.Tensor) -> list[tuple[str, torch.Tensor | tuple[torch.Tensor, ...]]]:
        """Returns finished (megatron name, tensor) pairs. `linear_fc1.weight` comes back as the tuple
        (gate, up) so the caller can store both halves without concatenating them."""
        if self.d.tied and hf_name == "lm_head.weight":
            return []  # tied checkpoints sometimes carry a copy of the embedding
        name, part = megatron_target(hf_name)
        if part is None:
            return [(name, t)]
        got = self.pending.setdefault(name, {})
        got[part] = t
        suffix = name.split(".", 3)[3]
        parts = FUSED_PARTS[suffix]
        if len(got) < len(parts):
            return []
        del self.pending[name]
        if suffix == "mlp.linear_fc1.weight":
            return [(name, (got["gate"], got["up"]))]
        return [(name, qkv_to_megatron(got["q"], got["k"], got["v"], self.d))]

    def unfinished(self) -> list[str]:
        return sorted(f"{n} (has {sorted(p)})" for n, p in self.pending.items())


def hf_from_megatron(name: str, t: torch.Tensor, d: Dims) -> list[tuple[str, torch.Tensor]]:
    """One megatron tensor (local or TE name, TP1 global layout, padded vocab) -> HF tensors."""
    name = local_name(name)
    if name == "embedding.word_embeddings.weight":
        return [("model.embed_tokens.weight", strip_vocab(t, d.vocab))]
    if name == "output_layer.weight":
        return [] if d.tied else [("lm_head.weight", strip_vocab(t, d.vocab))]
    if name in GLOBAL_TO_HF:
        return [(GLOBAL_TO_HF[name], t)]
    m = _MC_LAYER.match(name)
    if not m:
        raise KeyError(name)
    i, suffix = m.group(1), m.group(2)
    p = f"model.layers.{i}."
    if suffix in ("self_attention.linear_qkv.weight", "self_attention.linear_qkv.bias"):
        kind = suffix.rsplit(".", 1)[1]
        q, k, v = qkv_from_megatron(t, d)
        return [(f"{p}self_attn.q_proj.{kind}", q), (f"{p}self_attn.k_proj.{kind}", k),
                (f"{p}self_attn.v_proj.{kind}", v)]
    if suffix == "mlp.linear_fc1.weight":
        gate, up = fc1_from_megatron(t)
        return [(f"{p}mlp.gate_proj.weight", gate), (f"{p}mlp.up_proj.weight", up)]
    for hf_suffix, (mc_suffix, part) in LAYER_FROM_HF.items():
        if part is None and mc_suffix == suffix:
            return [(p + hf_suffix, t)]
    raise KeyError(name)


def hf_tensor_order(d: Dims) -> list[str]:
    """The order HF writes Qwen2 tensors in (embedding, layers in order, final norm, head)."""
    names = list(hf_expected_shapes(d))

    def key(n: str) -> tuple[int, int, str]:
        if n == "model.embed_tokens.weight":
            return 0, 0, n
        if m := _HF_LAYER.match(n):
            return 1, int(m.group(1)), n
        return 2, 0 if n == "model.norm.weight" else 1, n

    return sorted(names, key=key)
