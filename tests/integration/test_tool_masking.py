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
