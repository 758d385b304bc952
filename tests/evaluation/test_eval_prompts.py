import pytest
from eval_checks import TINY

from megatron_redi.evaluation.errors import ConfigError
from megatron_redi.evaluation.prompts import QWEN25_MATH_SYSTEM, PromptConfig, build_messages, render

PROBLEM = "Compute $\\{1,2\\}$ and $\\frac{a}{b}$."


def test_rllm_style_appends_instruction_to_the_problem():
    msgs = build_messages(PROBLEM, PromptConfig("rllm"))
    assert msgs == [{"role": "user", "content": PROBLEM
                     + " Let's think step by step and output the final answer within \\boxed{}."}]


def test_qwen25math_style_uses_system_prompt():
    msgs = build_messages(PROBLEM, PromptConfig("qwen25math"))
    assert msgs == [{"role": "system", "content": QWEN25_MATH_SYSTEM}, {"role": "user", "content": PROBLEM}]
    assert QWEN25_MATH_SYSTEM == "Please reason step by step, and put your final answer within \\boxed{}."


def test_overrides():
    cfg = PromptConfig("qwen25math", system_prompt="Be brief.", template="Q: {problem}\nA:")
    assert build_messages(PROBLEM, cfg) == [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": f"Q: {PROBLEM}\nA:"}]
    assert build_messages(PROBLEM, PromptConfig("qwen25math", system_prompt="")) == [
        {"role": "user", "content": PROBLEM}]


def test_bad_prompt_config():
    with pytest.raises(ConfigError, match="--prompt-template"):
        PromptConfig(template="no placeholder")
    with pytest.raises(ConfigError, match="--prompt-style"):
        PromptConfig(style="chatml")


def test_render_with_the_model_chat_template():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINY)
    text = render(tok, PROBLEM, PromptConfig("rllm"))
    # the tiny template (like Qwen2.5-Math's) injects the default system prompt when none is given
    assert text == ("<|im_start|>system\n" + QWEN25_MATH_SYSTEM + "<|im_end|>\n<|im_start|>user\n"
                    + build_messages(PROBLEM, PromptConfig("rllm"))[0]["content"]
                    + "<|im_end|>\n<|im_start|>assistant\n")
    plain = render(tok, PROBLEM, PromptConfig("qwen25math", chat_template=False))
    assert plain == QWEN25_MATH_SYSTEM + "\n\n" + PROBLEM + "\n\n"
    tok.chat_template = None
    with pytest.raises(ConfigError, match="--no-chat-template"):
        render(tok, PROBLEM, PromptConfig())
