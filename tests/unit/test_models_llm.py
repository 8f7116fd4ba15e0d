"""``LocalLLM`` over arbitrary LangChain models, stop-string truncation and the name registry."""

from __future__ import annotations

import uuid

import pytest
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from zhrag.errors import ConfigError, ModelLoadError
from zhrag.models import LocalLLM, load_llm, register_llm, truncate_at_stop, unregister_llm
from zhrag.models.registry import registered_llm


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        ("曹雪芹\n问题：下一个", ["\n"], "曹雪芹"),
        ("答案：北京。其他", ["\n", "。"], "答案：北京"),
        ("abc", [], "abc"),
        ("abc", [""], "abc"),
        ("\nabc", ["\n"], ""),
        ("是的，相关", ["否", "，"], "是的"),
    ],
)
def test_truncate_at_the_earliest_stop_string(text: str, stop: list[str], expected: str) -> None:
    assert truncate_at_stop(text, stop) == expected


def test_fake_chat_model_goes_through_generate() -> None:
    llm = LocalLLM.from_langchain(FakeListChatModel(responses=["曹雪芹\n多余的行", "是"]))
    assert llm.is_chat
    conversation = [SystemMessage("只回答答案。"), HumanMessage("《红楼梦》的作者是谁？")]
    assert llm.generate([conversation, "这段材料相关吗？"], max_new_tokens=8) == ["曹雪芹", "是"]
    assert llm.load_info["kind"] == "langchain"


def test_fake_base_llm_keeps_text_up_to_the_stop_strings() -> None:
    llm = LocalLLM.from_langchain(FakeListLLM(responses=["北京。\n下一题", "上海\n"]))
    assert not llm.is_chat
    assert llm.generate(["问题一", "问题二"], stop=("。", "\n")) == ["北京", "上海"]
    assert llm.generate(["问题三"], stop=()) == ["北京。\n下一题"]


def test_base_models_refuse_chat_messages() -> None:
    llm = LocalLLM.from_langchain(FakeListLLM(responses=["x"]))
    with pytest.raises(ConfigError, match="not a chat model"):
        llm.generate([[HumanMessage("你好")]])


def test_generate_validates_budget_and_accepts_no_prompts() -> None:
    llm = LocalLLM.from_langchain(FakeListChatModel(responses=["x"]))
    assert llm.generate([]) == []
    with pytest.raises(ConfigError, match="max_new_tokens"):
        llm.generate(["问题"], max_new_tokens=0)


def test_wrapped_langchain_models_have_no_transformers_model() -> None:
    llm = LocalLLM.from_langchain(FakeListChatModel(responses=["x"]))
    with pytest.raises(ConfigError, match="not a local Hugging Face model"), llm.hf_model():
        pass


def test_registered_models_resolve_by_name_until_unregistered() -> None:
    name = f"fake-{uuid.uuid4().hex[:8]}"
    llm = LocalLLM.from_langchain(FakeListChatModel(responses=["乙"]))
    register_llm(name, llm)
    try:
        assert load_llm(name) is llm
        assert load_llm(name, device="cpu", dtype="float32") is llm
        with pytest.raises(ModelLoadError, match="adapters cannot be applied"):
            load_llm(name, adapter="/some/adapter")
    finally:
        unregister_llm(name)
    assert registered_llm(name) is None
