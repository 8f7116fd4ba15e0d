"""Tokenise a ShareGPT conversation for supervised fine-tuning, learning only the assistant's replies.

Two layouts, chosen by the tokenizer:

- **chat template**: the conversation is rendered with the tokenizer's own template. Templates with
  ``{% generation %}`` blocks give the assistant tokens directly (``return_assistant_tokens_mask``); for
  other templates the assistant spans are found by rendering prefixes (the text up to the generation prompt
  before a reply, and the text through the reply) and mapped to tokens by their character offsets. A learned
  span is the reply and the template's end-of-turn token(s), without the whitespace after them.
  Tool-use traces (``function_call`` turns holding ``{"name", "arguments"}``, ``tool`` turns holding results, the
  example's ``tools`` specs) are rendered through the template's own tool format; the calls are learned like replies.
- **completion** (no chat template, e.g. the packaged Gemma-3-270M base model): the non-assistant turns,
  joined by a blank line, are the prompt (tokenised with the tokenizer's special tokens, as the generation
  pipeline does), then the single final gpt turn and EOS are the target. A tool-use trace for such a model is
  written as the ChatML text the a3 agent sends it (:func:`zhrag.models.tool_calls.tool_chat_segments`); every
  assistant turn's content and ``<|im_end|>`` marker are learned.

Labels are the input ids on learned tokens and ``IGNORE_INDEX`` (-100) elsewhere. A sequence longer than
``max_length`` keeps its leading BOS and its end: the start of the prompt is dropped (so a truncated window
may begin inside an earlier assistant reply, still learned). When even the final assistant reply (from its
first learned token on) does not fit, the conversation is skipped (``None``) rather than cut.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from zhrag.errors import ConfigError, TrainingDataError
from zhrag.models.tool_calls import tool_chat_segments
from zhrag.training.examples import Example, Turn, check_conversation

#: Label of tokens the loss ignores (PyTorch cross-entropy's default ``ignore_index``).
IGNORE_INDEX = -100
#: Chat-template roles of the ShareGPT speaker tags.
CHAT_ROLES = {"system": "system", "human": "user", "gpt": "assistant", "function_call": "assistant", "tool": "tool"}
#: Separator of the prompt turns in the completion layout.
COMPLETION_TURN_SEPARATOR = "\n\n"

# transformers' own test for assistant-mask support (utils/chat_template_utils.py).
_GENERATION_BLOCK = re.compile(r"\{\%-?\s*generation\s*-?\%\}")


class TokenizedExample(TypedDict):
    """Model inputs of one conversation: token ids, attention mask and labels (-100 outside learned tokens)."""

    input_ids: list[int]
    attention_mask: list[int]
    labels: list[int]


@dataclass
class TokenizedExamples:
    """Tokenised examples and the ids of those skipped because their target does not fit ``max_length``."""

    examples: list[TokenizedExample] = field(default_factory=list)
    skipped_ids: list[str] = field(default_factory=list)


def tokenize_conversation(
    conversation: Sequence[Turn], tokenizer: Any, *, max_length: int, tools: Sequence[dict[str, Any]] | None = None
) -> TokenizedExample | None:
    """Input ids, attention mask and labels of one conversation, or ``None`` when its target does not fit.

    Args:
        conversation: ShareGPT turns (``{"from": "system" | "human" | "gpt" | "function_call" | "tool",
            "value": ...}``).
        tokenizer: A transformers tokenizer; its chat template, if any, decides the layout.
        max_length: Most tokens kept.
        tools: OpenAI function specs of a tool-use conversation, rendered by the chat template.

    Raises:
        ConfigError: ``max_length`` < 1.
        TrainingDataError: malformed conversation, a template that rejects it, a completion-layout
            conversation that is not prompt turns plus one final gpt turn, or a tokenizer without what the
            layout needs (EOS token, offsets).
    """
    if max_length < 1:
        raise ConfigError(f"max_length must be >= 1, got {max_length}")
    turns = check_conversation(conversation)
    if getattr(tokenizer, "chat_template", None):
        ids, learned = _chat_tokens(turns, tokenizer, list(tools) if tools else None)
    elif tools or any(turn["from"] == "function_call" for turn in turns):
        ids, learned = _tool_text_tokens(turns, tokenizer, list(tools or []))
    else:
        ids, learned = _completion_tokens(turns, tokenizer)
    if not any(learned):
        raise TrainingDataError("the chat template renders no assistant tokens for this conversation")
    fitted = _fit(ids, learned, max_length, keep_head=1 if ids and ids[0] == tokenizer.bos_token_id else 0)
    if fitted is None:
        return None
    ids, learned = fitted
    return TokenizedExample(
        input_ids=ids,
        attention_mask=[1] * len(ids),
        labels=[token if keep else IGNORE_INDEX for token, keep in zip(ids, learned, strict=True)],
    )


def tokenize_examples(examples: Iterable[Example], tokenizer: Any, *, max_length: int) -> TokenizedExamples:
    """Tokenise every example's conversation; those whose target does not fit are listed, not cut."""
    result = TokenizedExamples()
    for example in examples:
        tools = example_tools(example)
        tokenized = tokenize_conversation(example["conversations"], tokenizer, max_length=max_length, tools=tools)
        if tokenized is None:
            result.skipped_ids.append(example["id"])
        else:
            result.examples.append(tokenized)
    return result


def example_tools(example: Example) -> list[dict[str, Any]] | None:
    """The example's ``tools`` (a JSON string of function specs, or a list), or ``None``."""
    value = example.get("tools")
    if not value:
        return None
    try:
        tools = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        raise TrainingDataError(f"example {example['id']!r}: 'tools' is not JSON") from None
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise TrainingDataError(f"example {example['id']!r}: 'tools' must be a list of function specs")
    return tools


def chat_message(turn: Turn) -> dict[str, Any]:
    """The chat-template message of a ShareGPT turn (a ``function_call`` becomes an assistant tool call)."""
    if turn["from"] != "function_call":
        return {"role": CHAT_ROLES[turn["from"]], "content": turn["value"]}
    try:
        call = json.loads(turn["value"])
    except ValueError:
        raise TrainingDataError(f"function_call turn is not JSON: {turn['value'][:80]!r}") from None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not isinstance(call.get("arguments"), dict):
        raise TrainingDataError('function_call turn must be {"name": ..., "arguments": {...}}')
    return {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]}


def _chat_tokens(
    turns: list[Turn], tokenizer: Any, tools: list[dict[str, Any]] | None = None
) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered chat and which of them belong to assistant replies (and tool calls)."""
    if not tokenizer.is_fast:
        raise TrainingDataError("locating assistant tokens needs a fast tokenizer (character offsets)")
    messages = [chat_message(turn) for turn in turns]
    if tools:
        options: dict[str, Any] = {"tools": tools}
    else:
        options = {}
    if _GENERATION_BLOCK.search(tokenizer.get_chat_template()):
        rendered = _render(tokenizer, messages, return_dict=True, return_assistant_tokens_mask=True, **options)
        return list(rendered["input_ids"]), [bool(flag) for flag in rendered["assistant_masks"]]
    text = _render(tokenizer, messages, tokenize=False, **options)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], tokenize=False, add_generation_prompt=True, **options)
        through = _render(tokenizer, messages[: index + 1], tokenize=False, **options)
        if not (through.startswith(before) and text.startswith(through)):
            raise TrainingDataError(
                "the chat template renders a conversation prefix differently from the whole conversation; "
                "use a template with {% generation %} blocks"
            )
        spans.append((len(before), len(through.rstrip())))
    return _tokens_in_spans(tokenizer, text, spans, add_special_tokens=False)


def _render(tokenizer: Any, messages: list[dict[str, Any]], **options: Any) -> Any:
    """``apply_chat_template`` with template errors (roles, alternation) reported as data errors."""
    from jinja2 import TemplateError  # chat templates only; imported when one is rendered

    try:
        return tokenizer.apply_chat_template(messages, **options)
    except TemplateError as error:  # the template's raise_exception(...) for roles it does not accept
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TrainingDataError(f"the chat template rejects the conversation: {message}") from None


def _completion_tokens(turns: list[Turn], tokenizer: Any) -> tuple[list[int], list[bool]]:
    """Prompt (special tokens included) + final gpt turn + EOS; only the last two are learned."""
    *prompt_turns, last = turns
    if last["from"] != "gpt" or any(turn["from"] == "gpt" for turn in prompt_turns):
        raise TrainingDataError(
            "without a chat template a conversation must be prompt turns followed by one final gpt turn"
        )
    if tokenizer.eos_token_id is None:
        raise TrainingDataError("the tokenizer has no EOS token to end the target with")
    prompt = COMPLETION_TURN_SEPARATOR.join(turn["value"] for turn in prompt_turns)
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    target_ids = [*tokenizer(last["value"], add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    return prompt_ids + target_ids, [False] * len(prompt_ids) + [True] * len(target_ids)


def _tool_text_tokens(turns: list[Turn], tokenizer: Any, tools: list[dict[str, Any]]) -> tuple[list[int], list[bool]]:
    """A tool-use conversation for a tokenizer without a chat template: the ChatML text the agent sends such a
    model (:func:`~zhrag.models.tool_calls.tool_chat_segments`), each assistant turn's content and end marker learned."""
    if not tokenizer.is_fast:
        raise TrainingDataError("locating assistant tokens needs a fast tokenizer (character offsets)")
    text, spans = "", []
    for part, assistant in tool_chat_segments([chat_message(turn) for turn in turns], tools):
        if assistant:
            spans.append((len(text), len(text) + len(part)))
        text += part
    # The tokenizer's own special tokens (BOS) come first, as in generation; no learned span starts at 0.
    return _tokens_in_spans(tokenizer, text, spans, add_special_tokens=True)


def _tokens_in_spans(
    tokenizer: Any, text: str, spans: list[tuple[int, int]], *, add_special_tokens: bool
) -> tuple[list[int], list[bool]]:
    """Token ids of ``text`` and which of them start inside one of the character ``spans`` (fast tokenizers)."""
    encoding = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    learned = [any(start <= begin < end for start, end in spans) for begin, _ in encoding["offset_mapping"]]
    return list(encoding["input_ids"]), learned


def _fit(
    ids: list[int], learned: list[bool], max_length: int, *, keep_head: int
) -> tuple[list[int], list[bool]] | None:
    """Cut ``ids`` to ``max_length`` from the left after the first ``keep_head`` tokens; ``None`` if the target is cut."""
    if len(ids) <= max_length:
        return ids, learned
    target_start = _last_run_start(learned)
    tail = max_length - keep_head
    if tail < 1 or len(ids) - target_start > tail:
        return None
    return ids[:keep_head] + ids[-tail:], learned[:keep_head] + learned[-tail:]


def _last_run_start(learned: list[bool]) -> int:
    """Index of the first token of the last run of learned tokens (the final assistant reply)."""
    end = max(index for index, flag in enumerate(learned) if flag)
    start = end
    while start > 0 and learned[start - 1]:
        start -= 1
    return start
