"""Build a tiny Qwen2-shaped model config and a byte-level BPE tokenizer from local text only.

Tests, the quickstart and CI must never download weights or tokenizers; this writes a folder that
`transformers.AutoTokenizer.from_pretrained` and our model provider open like a real Qwen2 checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

from megatron_redi.data.chat_template import QWEN25_MATH_CHAT_TEMPLATE
from megatron_redi.data.synthetic import iter_synthetic_problems

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

TINY_QWEN2_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
    "use_sliding_window": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
}


def _corpus() -> list[str]:
    texts = []
    for p in iter_synthetic_problems(400, seed=1234):
        texts += [p["problem"], p["correct"], p["incorrect"]]
    texts.append("Please reason step by step, and put your final answer within \\boxed{}.")
    texts.append("system user assistant \\frac{1}{2} \\sqrt{x} \\left( \\right) 0123456789")
    return texts


def build_tiny_tokenizer(
    out_dir: str | Path, vocab_size: int = 384, corpus: list[str] | None = None, qwen_pretokenizer: bool = False
) -> None:
    """Train a deterministic byte-level BPE and save it with Qwen's special tokens and chat template.

    `corpus` defaults to the bundled synthetic traces. `qwen_pretokenizer` splits text with Qwen2's own
    pattern first (every digit its own token, as in Qwen2.5), which arithmetic tasks need.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from megatron_redi.data.qwen_tokenizer import QWEN2_PATTERN

    tok = Tokenizer(models.BPE())
    if qwen_pretokenizer:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus if corpus is not None else _corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = QWEN25_MATH_CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))


def build_tiny_model_dir(
    out_dir: str | Path,
    corpus: list[str] | None = None,
    vocab_size: int = 384,
    qwen_pretokenizer: bool = False,
    **config_overrides,
) -> Path:
    """Write tokenizer files (see :func:`build_tiny_tokenizer`) and a Qwen2 `config.json` whose vocab
    matches the tokenizer; `config_overrides` replace fields of :data:`TINY_QWEN2_CONFIG`."""
    from transformers import AutoTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_tiny_tokenizer(out, vocab_size=vocab_size, corpus=corpus, qwen_pretokenizer=qwen_pretokenizer)
    tok = AutoTokenizer.from_pretrained(str(out))
    cfg = dict(TINY_QWEN2_CONFIG)
    cfg["vocab_size"] = len(tok)
    cfg["eos_token_id"] = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg["bos_token_id"] = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg.update(config_overrides)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out


def main() -> None:
    """Regenerate the bundled assets (`python -m megatron_redi.data.tiny_assets`)."""
    from megatron_redi.data.synthetic import write_synthetic_sets

    root = Path(__file__).resolve().parent.parent / "assets"
    build_tiny_model_dir(root / "tiny_qwen2")
    write_synthetic_sets(root / "sample", n=256, seed=42)


if __name__ == "__main__":
    main()
