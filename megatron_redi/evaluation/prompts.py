"""Prompt construction: one function turns a problem into chat messages, the model's chat template
turns them into text. Both backends receive the same token ids, so prompts never differ between them.

Two styles follow the paper's evaluations:
- ``qwen25math``: the Qwen2.5-Math system prompt, the bare problem as the user turn;
- ``rllm``: no system message of our own (a Qwen2.5-Math template then injects its default), and the
  user turn is the problem followed by a step-by-step instruction asking for a boxed answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

QWEN25_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
RLLM_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."

# style -> (system prompt or None, user template)
STYLES: dict[str, tuple[str | None, str]] = {
    "rllm": (None, "{problem} " + RLLM_INSTRUCTION),
    "qwen25math": (QWEN25_MATH_SYSTEM, "{problem}"),
    "plain": (None, "{problem}"),
}


@dataclass(frozen=True)
class PromptConfig:
    """``system_prompt`` / ``template`` override the style's; ``system_prompt=""`` means no system turn.
    ``chat_template=False`` feeds the rendered text with no chat markup (for base models)."""

    style: str = "rllm"
    system_prompt: str | None = None
    template: str | None = None
    chat_template: bool = True

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ConfigError(f"--prompt-style: unknown style {self.style!r}; known: {', '.join(STYLES)}")
        if self.template is not None and "{problem}" not in self.template:
            raise ConfigError("--prompt-template must contain the placeholder {problem}")

    def resolved(self) -> tuple[str | None, str]:
        system, template = STYLES[self.style]
        if self.system_prompt is not None:
            system = self.system_prompt or None
        return system, self.template if self.template is not None else template


def user_text(problem: str, cfg: PromptConfig) -> str:
    # str.replace, not str.format: problems are full of LaTeX braces.
    return cfg.resolved()[1].replace("{problem}", problem)


def build_messages(problem: str, cfg: PromptConfig) -> list[dict[str, str]]:
    system, _ = cfg.resolved()
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user_text(problem, cfg)})
    return messages


def render(tokenizer, problem: str, cfg: PromptConfig) -> str:
    """The exact prompt text the model sees (chat template applied, generation prompt added)."""
    messages = build_messages(problem, cfg)
    if not cfg.chat_template:
        return "\n\n".join(m["content"] for m in messages) + "\n\n"
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError(
            "the tokenizer has no chat template; pass --no-chat-template to prompt with plain text"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
