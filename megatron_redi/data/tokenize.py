"""Chat-template tokenisation with the reference code's completion boundary (docs/REDI.md).

prompt     = template(system + user turns, add_generation_prompt=True)   (ends "<|im_start|>assistant\\n")
completion = template(full)[len(prompt):] + EOS                        ("{generation}<|im_end|>\\n" + EOS)
Prompt and completion are tokenised separately, so the boundary is exact.

Length policy (`fit`), after `--max-prompt-length` has cut long prompts (keeping their end: the question
sits last):
  - an example (an SFT sequence, or either side of a pair) whose prompt + completion exceeds `--seq-length`
    is skipped by default and counted (`skipped_too_long`): the paper filters such pairs out before training;
  - with `--truncate-long-examples`, each completion instead keeps its first tokens (TRL's `keep_start`: every
    kept token still sees the exact text before it; the EOS is lost) and the prompt is never shortened to
    fit (its minimum is the whole prompt); an example whose prompt leaves fewer than
    `--min-completion-tokens` tokens of room is still skipped.
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
    truncate_long_examples: bool = False  # False: skip what does not fit --seq-length
    min_completion_tokens: int = 1  # with truncation: skip when less room than this is left after the prompt
    keep_identical_pairs: bool = False  # False: skip pairs whose chosen equals rejected after templating
    all_assistant_turns: bool = False  # SFT `messages`: one unit per assistant turn (else the last only)


@dataclass
class TruncationStats:
    prompts_truncated: int = 0
    sequences_truncated: int = 0


def open_tokenizer(path: str | Path, flag: str = "--tokenizer-model"):
    """A local HF tokenizer folder (FileNotFoundError naming `flag` and the folder otherwise)."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{flag}: {p} is not a directory holding an HF tokenizer")
    try:
        return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception as e:  # transformers raises many types here
        raise FileNotFoundError(f"{flag}: cannot load a tokenizer from {p}: {e}") from e


def load_tokenizer(path: str | Path):
    """A local HF tokenizer folder for training; it must carry a chat template and an EOS token."""
    p = Path(path)
    tok = open_tokenizer(p)
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"--tokenizer-model: {p} has no chat template (tokenizer_config.json "
                         f"'chat_template' or chat_template.jinja); add one or use a Qwen2.5 tokenizer")
    if tok.eos_token_id is None:
        raise ValueError(f"--tokenizer-model: {p} defines no eos_token")
    return tok


def prefix_error(prompt_text: str, full_text: str, messages: list[Message]) -> DataError:
    """Why the rendered prompt is not a prefix of the rendered conversation: where they first differ and
    the likely causes."""
    i = next((k for k, (a, b) in enumerate(zip(prompt_text, full_text)) if a != b),
             min(len(prompt_text), len(full_text)))
    lo = max(i - 30, 0)
    roles = sorted({m["role"] for m in messages})
    contents = [m["content"] for m in messages]
    dup = any(contents[k] == contents[k + 2] for k in range(len(contents) - 2)) or \
        any(contents[k] == contents[k + 1] for k in range(len(contents) - 1))
    causes = [f"a role the template does not render like the others (roles here: {roles})",
              "a template that rewrites earlier turns once a reply follows (e.g. drops reasoning or the system "
              "prompt)"]
    if dup:
        causes.insert(0, "a duplicated prompt (the same text appears twice in the conversation: was the prompt "
                         "given in 'prompt' AND inside the conversation?)")
    return DataError(
        "the chat template does not render the prompt as a prefix of the full conversation, so the completion "
        f"boundary cannot be found; they first differ at character {i}: prompt renders "
        f"{prompt_text[lo:i + 30]!r}, the conversation renders {full_text[lo:i + 30]!r}. Likely cause: "
        + "; or ".join(causes))


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
                raise prefix_error(p_text, full, prompt + completion)
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

    def fit(self, prompt_ids: list[int], completion_ids: list[int]) -> list[int] | None:
        """The completion ids that fit --seq-length after the prompt, or None to skip the example (see the
        module's length policy). The prompt is never shortened here."""
        room = self.cfg.seq_length - len(prompt_ids)
        if len(completion_ids) <= room:
            return completion_ids
        if not self.cfg.truncate_long_examples or room < max(self.cfg.min_completion_tokens, 1):
            return None
        self.stats.sequences_truncated += 1
        return completion_ids[:room]  # keep_start
