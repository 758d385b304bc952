"""Chat-template tokenisation with the reference code's completion boundary (REDI.md).

prompt     = template(system + user turns, add_generation_prompt=True)   (ends "<|im_start|>assistant\\n")
completion = template(full)[len(prompt):] + EOS                        ("{generation}<|im_end|>\\n" + EOS)
Prompt and completion are tokenised separately, as TRL does, so the boundary is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from megatron_redi.data.schema import DataError, Message


@dataclass
class TokenizeConfig:
    max_prompt_length: int | None = None
    seq_length: int = 4096
    system_prompt: str | None = None


@dataclass
class TruncationStats:
    prompts_truncated: int = 0
    sequences_truncated: int = 0


def load_tokenizer(path: str | Path):
    """A local HF tokenizer folder; it must carry a chat template and an EOS token."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"--tokenizer-model: {p} is not a directory holding an HF tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception as e:  # transformers raises many types here
        raise FileNotFoundError(f"--tokenizer-model: cannot load a tokenizer from {p}: {e}") from e
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"--tokenizer-model: {p} has no chat template (tokenizer_config.json "
                         f"'chat_template' or chat_template.jinja); add one or use a Qwen2.5 tokenizer")
    if tok.eos_token_id is None:
        raise ValueError(f"--tokenizer-model: {p} defines no eos_token")
    return tok


class ChatEncoder:
    """Encodes (prompt messages, completion messages) into token ids with truncation accounting."""

    def __init__(self, tokenizer, cfg: TokenizeConfig):
        self.tok = tokenizer
        self.cfg = cfg
        self.stats = TruncationStats()

    def _prompt_messages(self, prompt: list[Message]) -> list[Message]:
        if self.cfg.system_prompt is not None:
            prompt = [m for m in prompt if m["role"] != "system"]
            prompt = [{"role": "system", "content": self.cfg.system_prompt}, *prompt]
        return prompt

    def texts(self, prompt: list[Message], completions: list[list[Message]]) -> tuple[str, list[str]]:
        """(prompt text, completion texts); the prompt is rendered once for all completions."""
        prompt = self._prompt_messages(prompt)
        p_text = self.tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        c_texts = []
        for completion in completions:
            full = self.tok.apply_chat_template(prompt + completion, tokenize=False)
            if not full.startswith(p_text):
                raise DataError("the chat template does not render the prompt as a prefix of the full "
                                "conversation; cannot locate the completion boundary")
            c_texts.append(full[len(p_text):])
        return p_text, c_texts

    def truncate_prompt(self, ids: list[int]) -> list[int]:
        if self.cfg.max_prompt_length and len(ids) > self.cfg.max_prompt_length:
            ids = ids[-self.cfg.max_prompt_length:]  # keep the end: the question sits last
            self.stats.prompts_truncated += 1
        return ids

    def encode_prompt(self, prompt: list[Message]) -> list[int]:
        p_text = self.tok.apply_chat_template(self._prompt_messages(prompt), tokenize=False,
                                              add_generation_prompt=True)
        return self.truncate_prompt(self.tok(p_text, add_special_tokens=False)["input_ids"])

    def encode_completion(self, prompt: list[Message], completion: list[Message]) -> list[int]:
        _, (c_text,) = self.texts(prompt, [completion])
        return self.tok(c_text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]

    def fit(self, prompt_ids: list[int], completion_ids: list[int]) -> tuple[list[int], list[int]]:
        """Keep-end truncation of prompt + completion to --seq-length (counted, never silent)."""
        over = len(prompt_ids) + len(completion_ids) - self.cfg.seq_length
        if over > 0:
            self.stats.sequences_truncated += 1
            cut_prompt = min(over, max(len(prompt_ids) - 1, 0))
            prompt_ids = prompt_ids[cut_prompt:]
            over -= cut_prompt
            if over > 0:
                completion_ids = completion_ids[over:]
        return prompt_ids, completion_ids
