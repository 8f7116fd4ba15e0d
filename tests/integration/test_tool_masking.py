"""Masked labels of a multi-turn tool-use trace, token by token, on Qwen2.5's real chat template and tokenizer
(read from the packaged Qwen2.5-Coder-0.5B GGUF)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from zhrag.errors import TrainingDataError
from zhrag.prompts.agent import AGENT_SYSTEM
from zhrag.training.masking import IGNORE_INDEX, tokenize_conversation, tokenize_examples

pytestmark = [pytest.mark.integration]

TOOLS = [{"type": "function", "function": {
    "name": "qdrant-find", "description": "Search the knowledge base.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]
TRACE = [
    {"from": "system", "value": AGENT_SYSTEM},
    {"from": "human", "value": "《九命奇冤》是由哪位作者所著？"},
    {"from": "function_call", "value": json.dumps({"name": "qdrant-find", "arguments": {"query": "九命奇冤 作者"}},
                                                  ensure_ascii=False)},
    {"from": "tool", "value": "[1] 九命奇冤：九命奇冤，清吴沃尧所著。"},
    {"from": "function_call", "value": json.dumps({"name": "qdrant-find", "arguments": {"query": "吴沃尧"}},
                                                  ensure_ascii=False)},
    {"from": "tool", "value": "[1] 吴趼人：吴趼人，原名吴沃尧。"},
    {"from": "gpt", "value": "吴沃尧"},
]


@pytest.fixture(scope="module")
def qwen_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from zhrag.models.packaged import packaged_gguf

    path, _ = packaged_gguf("qwen2.5-coder-0.5b")
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def learned_spans(tokenizer: Any, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded runs of consecutive learned tokens."""
    spans, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label == IGNORE_INDEX:
            if current:
                spans.append(tokenizer.decode(current))
                current = []
        else:
            assert label == token
            current.append(token)
    if current:
        spans.append(tokenizer.decode(current))
    return spans


def test_every_assistant_turn_of_a_tool_trace_is_learned_and_nothing_else(qwen_tokenizer: Any) -> None:
    result = tokenize_conversation(TRACE, qwen_tokenizer, max_length=2048, tools=TOOLS)
    assert result is not None
    ids, labels = result["input_ids"], result["labels"]
    assert learned_spans(qwen_tokenizer, ids, labels) == [
        '<tool_call>\n{"name": "qdrant-find", "arguments": {"query": "九命奇冤 作者"}}\n</tool_call><|im_end|>',
        '<tool_call>\n{"name": "qdrant-find", "arguments": {"query": "吴沃尧"}}\n</tool_call><|im_end|>',
        "吴沃尧<|im_end|>",
    ]
    text = qwen_tokenizer.decode(ids)
    assert '<tools>\n{"type": "function", "function": {"name": "qdrant-find"' in text  # specs in the prompt, unlearned
    assert text.count("<tool_response>") == 2
    # One sample trains all its assistant turns: the same labels as splitting it into single-turn samples.
    for end in (3, 5):
        prefix = tokenize_conversation(TRACE[:end], qwen_tokenizer, max_length=2048, tools=TOOLS)
        assert prefix is not None
        assert learned_spans(qwen_tokenizer, prefix["input_ids"], prefix["labels"])[-1] == learned_spans(
            qwen_tokenizer, ids, labels)[(end - 3) // 2]


def test_tool_examples_carry_their_specs_and_bad_calls_are_named(qwen_tokenizer: Any) -> None:
    example = {"id": "t1", "task": "answer", "conversations": TRACE, "meta": {}, "tools": json.dumps(TOOLS)}
    [tokenized] = tokenize_examples([example], qwen_tokenizer, max_length=2048).examples
    assert "<tools>" in qwen_tokenizer.decode(tokenized["input_ids"])
    broken = [*TRACE[:2], {"from": "function_call", "value": "qdrant-find(九命奇冤)"}, TRACE[-1]]
    with pytest.raises(TrainingDataError, match="function_call turn is not JSON"):
        tokenize_conversation(broken, qwen_tokenizer, max_length=2048, tools=TOOLS)


@pytest.fixture(scope="module")
def gemma_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from zhrag.models.packaged import packaged_gguf

    path, _ = packaged_gguf("gemma3-270m")
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def test_a_base_model_learns_the_chatml_turns_the_agent_sends_it(gemma_tokenizer: Any) -> None:
    """Gemma-3-270M has no chat template: the trace is the ChatML text of tool_chat_prompt, its assistant turns
    (calls, answer, end markers) learned and nothing else."""
    from zhrag.models.tool_calls import TURN_END, tool_chat_prompt

    assert not gemma_tokenizer.chat_template
    result = tokenize_conversation(TRACE, gemma_tokenizer, max_length=2048, tools=TOOLS)
    assert result is not None
    spans = learned_spans(gemma_tokenizer, result["input_ids"], result["labels"])
    assert spans == [
        '<tool_call>\n{"name": "qdrant-find", "arguments": {"query": "九命奇冤 作者"}}\n</tool_call>' + TURN_END,
        '<tool_call>\n{"name": "qdrant-find", "arguments": {"query": "吴沃尧"}}\n</tool_call>' + TURN_END,
        "吴沃尧" + TURN_END,
    ]
    # What precedes the first learned token is exactly the prompt the agent sends the model for its first turn.
    first = result["labels"].index(next(label for label in result["labels"] if label != IGNORE_INDEX))
    history = [{"role": "system", "content": AGENT_SYSTEM}, {"role": "user", "content": TRACE[1]["value"]}]
    assert gemma_tokenizer.decode(result["input_ids"][:first], skip_special_tokens=True) == tool_chat_prompt(
        history, TOOLS)
