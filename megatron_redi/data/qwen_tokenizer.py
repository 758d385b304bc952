"""A Qwen2.5-style tokenizer built from Qwen's published BPE ranks, for tests and the data benchmark.

Qwen's 151,643 byte-level BPE ranks ship in the `dashscope` package (`dashscope/resources/qwen.tiktoken`);
this module never vendors them. `build_qwen25_tokenizer` turns them into a `tokenizers` BPE (merges derived
from the ranks as transformers' `TikTokenConverter` does), with Qwen2's pre-tokeniser regex, NFC
normalisation, the Qwen2.5 special tokens at ids 151643-151664 and the Qwen2.5-Math chat template, and saves
it as a local HF tokenizer folder. Install the ranks with `pip install --no-deps dashscope` (the package's own
dependencies are not needed: only its data file is read, the package is never imported).
"""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

from megatron_redi.data.chat_template import QWEN25_MATH_CHAT_TEMPLATE

# Qwen2's pre-tokenisation pattern (tokenizer.json of the Qwen2 / Qwen2.5 models).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen2.5's added tokens, in id order from 151643; `<tool_call>` and `</tool_call>` are not special there.
QWEN25_ADDED_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
NUM_RANKS = 151643


def qwen_ranks_path() -> Path:
    """`qwen.tiktoken` of the installed `dashscope` package (found without importing it)."""
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("Qwen's BPE ranks come from the dashscope package: pip install --no-deps "
                                "dashscope==2.0.2 (see requirements/cpu-nodeps.txt)")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed dashscope package")
    return path


def load_ranks(path: str | Path) -> dict[bytes, int]:
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_qwen25_tokenizer(out_dir: str | Path, ranks_path: str | Path | None = None) -> Path:
    """Write a Qwen2.5 tokenizer folder (tokenizer.json, tokenizer_config.json, chat template) to `out_dir`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ranks = load_ranks(ranks_path or qwen_ranks_path())
    if len(ranks) != NUM_RANKS or sorted(ranks.values()) != list(range(NUM_RANKS)):
        raise ValueError(f"expected Qwen's {NUM_RANKS} ranks 0..{NUM_RANKS - 1}, got {len(ranks)}")
    enc = _bytes_to_unicode()

    def s(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    vocab = {s(t): r for t, r in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        local = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        local.sort(key=lambda lr: (ranks[lr[0]], ranks[lr[1]]))
        merges += [(rank, lr) for lr in local]
    merges.sort(key=lambda m: m[0])
    tok = Tokenizer(models.BPE(vocab, [(s(a), s(b)) for _, (a, b) in merges], fuse_unk=False, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_special_tokens([AddedToken(t, special=not t.endswith("tool_call>"), normalized=False)
                            for t in QWEN25_ADDED_TOKENS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   model_max_length=131072)
    fast.chat_template = QWEN25_MATH_CHAT_TEMPLATE
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return out
