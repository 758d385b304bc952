"""Token lengths for the builder's length filter, as the trainer counts them."""

from __future__ import annotations

import json


class TokenLengths:
    """Token counts as the trainer sees them (docs/REDI.md): prompt = chat-templated system + user turns + the
    generation prompt; response = the templated assistant turn (`{generation}<|im_end|>\\n`) + one EOS.

    The template is rendered once around sentinels and the pieces are reused, so each text is tokenized
    once, in batches, by the fast (Rust) tokenizer without building Python id lists.

    Tokenizing is by far the slowest step of the build, and most texts are far below the bounds. For a
    byte-level BPE (Qwen's kind: NFC or no normalizer, ByteLevel pre-tokenizer) every token covers at least
    one input byte, so an ASCII text (which NFC leaves unchanged) has at most len(text) tokens: when that is
    within the bound the decision is already exact and the text is not tokenized. `tokenized` counts the
    texts that were.
    """

    _USER, _ASSISTANT = "\x00REDI_USER\x00", "\x00REDI_ASSISTANT\x00"

    def __init__(self, model_dir: str) -> None:
        from transformers import AutoTokenizer

        from megatron_redi.data.chat_template import QWEN25_MATH_CHAT_TEMPLATE

        tok = AutoTokenizer.from_pretrained(model_dir)
        if not getattr(tok, "chat_template", None):
            tok.chat_template = QWEN25_MATH_CHAT_TEMPLATE
        user = [{"role": "user", "content": self._USER}]
        prompt = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(user + [{"role": "assistant", "content": self._ASSISTANT}], tokenize=False)
        if prompt.count(self._USER) != 1 or not full.startswith(prompt) or full.count(self._ASSISTANT) != 1:
            raise ValueError(f"chat template of {model_dir} does not render prompt + completion as a prefix pair")
        self.prompt_parts = tuple(prompt.split(self._USER))
        self.completion_parts = tuple(full[len(prompt) :].split(self._ASSISTANT))
        self.eos_extra = 1 if tok.eos_token_id is not None else 0
        self.tokenizer = tok
        backend = getattr(tok, "backend_tokenizer", None)
        self._encode = getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)
        self.byte_bounded = backend is not None and _is_byte_level_bpe(json.loads(backend.to_str()))
        self.tokenized = 0

    def _count(self, texts: list[str], chunk: int = 64) -> list[int]:
        # Chunks of 64: an Encoding of a 20k-token trace holds several arrays, so bound how many live at once.
        out: list[int] = []
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            if self._encode is not None:
                out.extend(len(e) for e in self._encode(part, add_special_tokens=False))
            else:
                out.extend(len(x) for x in self.tokenizer(part, add_special_tokens=False)["input_ids"])
        return out

    def prompt_tokens(self, problems: list[str]) -> list[int]:
        before, after = self.prompt_parts
        return self._count([before + p + after for p in problems])

    def response_tokens(self, generations: list[str]) -> list[int]:
        before, after = self.completion_parts
        return [n + self.eos_extra for n in self._count([before + g + after for g in generations])]

    def _within(self, texts: list[str], bound: int, extra: int) -> list[bool]:
        ok: list[bool | None] = [None] * len(texts)
        if self.byte_bounded:
            for i, t in enumerate(texts):
                if len(t) + extra <= bound and t.isascii():
                    ok[i] = True
        todo = [i for i, v in enumerate(ok) if v is None]
        self.tokenized += len(todo)
        for i, n in zip(todo, self._count([texts[i] for i in todo])):
            ok[i] = n + extra <= bound
        return ok  # type: ignore[return-value]

    def prompts_within(self, problems: list[str], bound: int) -> list[bool]:
        """Whether each templated prompt has at most `bound` tokens (exact, tokenizing only when needed)."""
        before, after = self.prompt_parts
        return self._within([before + p + after for p in problems], bound, 0)

    def responses_within(self, generations: list[str], bound: int) -> list[bool]:
        """Whether each templated response (with its EOS) has at most `bound` tokens."""
        before, after = self.completion_parts
        return self._within([before + g + after for g in generations], bound, self.eos_extra)


def _is_byte_level_bpe(spec: dict) -> bool:
    """A BPE over bytes with no normalizer that could lengthen ASCII text: tokens <= bytes holds."""
    normalizer = spec.get("normalizer")
    pre = json.dumps(spec.get("pre_tokenizer"))
    return (
        spec.get("model", {}).get("type") == "BPE"
        and (normalizer is None or normalizer.get("type") == "NFC")
        and '"ByteLevel"' in pre
    )
