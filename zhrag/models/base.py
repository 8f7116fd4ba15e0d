"""The model protocol, :class:`LLM`, and the types and code its engines share.

Graph nodes, evaluations and training see a language model only as an :class:`LLM`. The engines are sibling
modules, each an :class:`LLMBase` subclass:

- :mod:`zhrag.models.hf`: :class:`~zhrag.models.hf.LocalLLM`, in process: a transformers model
  (:mod:`zhrag.models.hf_runtime`) or any wrapped LangChain model (fake models in tests);
- :mod:`zhrag.models.llamacpp`: :class:`~zhrag.models.llamacpp.LlamaCppLLM`, a GGUF model on llama.cpp, in process;
- :mod:`zhrag.models.endpoint`: :class:`~zhrag.models.endpoint.EndpointLLM`, a chat model served by an
  OpenAI-compatible endpoint.

Tool calls are written and read in the format of :mod:`zhrag.models.tool_calls`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from zhrag.errors import ConfigError
from zhrag.models.tool_calls import (
    TURN_END,
    ToolReply,
    call_prefill,
    parse_tool_calls,
    render_tool_messages,
    tool_chat_prompt,
)

#: A completion prompt (base models) or a list of chat messages (chat models).
Prompt = str | Sequence[BaseMessage]

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def chat_dicts(prompt: Prompt) -> list[dict[str, str]]:
    """OpenAI-style ``{"role", "content"}`` messages of a prompt (a string is one user message)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": _ROLES.get(message.type, "user"), "content": str(message.content)} for message in prompt]


@dataclass(frozen=True)
class ScoredText:
    """A greedy completion with the log-probability of each generated token.

    Attributes:
        text: The completion (cut at the first stop string, without it).
        tokens: The generated tokens as text, in order (tokens after a stop string may be included).
        logprobs: Natural-log probability of each token in ``tokens``.
    """

    text: str
    tokens: tuple[str, ...]
    logprobs: tuple[float, ...]

    def confidence(self) -> float | None:
        """Geometric-mean probability of the answer's tokens (``exp`` of their mean log-probability).

        Only tokens up to the answer's end count (the stop string and what follows are not the answer);
        ``None`` when no token was generated.
        """
        kept: list[float] = []
        seen = ""
        for token, logprob in zip(self.tokens, self.logprobs, strict=False):
            if len(seen) >= len(self.text) and kept:
                break
            seen += token
            kept.append(logprob)
        if not kept:
            return None
        return math.exp(sum(kept) / len(kept))


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` cut before the earliest occurrence of any of the ``stop`` strings (empty ones ignored)."""
    cut = min((index for s in stop if s and (index := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def scored_from_logprobs(text: str, entries: Sequence[dict[str, Any]], stop: Sequence[str]) -> ScoredText:
    """A completion and its OpenAI-style per-token ``logprobs`` entries (``{"token", "logprob"}``) as a
    :class:`ScoredText` (no entries: no tokens, so no confidence)."""
    return ScoredText(
        text=truncate_at_stop(text, stop),
        tokens=tuple(str(entry.get("token", "")) for entry in entries),
        logprobs=tuple(float(entry.get("logprob", -math.inf)) for entry in entries),
    )


def candidate_probabilities(entries: Sequence[dict[str, Any]], candidates: Sequence[str]) -> dict[str, float]:
    """The probability of each candidate as the first token, from the first OpenAI-style ``logprobs`` entry's
    ``top_logprobs`` (whitespace around a token ignored; a candidate outside the alternatives gets 0)."""
    probabilities = dict.fromkeys(candidates, 0.0)
    for alternative in (entries[0].get("top_logprobs") or []) if entries else []:
        word = str(alternative.get("token", "")).strip()
        if word in probabilities:
            probabilities[word] += math.exp(float(alternative.get("logprob", -math.inf)))
    return probabilities


class LLM(Protocol):
    """A language model as graph nodes, evaluations and training use it: greedy generation, token probabilities
    where the engine gives them, and tool-calling turns.

    Attributes:
        is_chat: Whether prompts must be chat messages (``True``) or completion strings (``False``).
        load_info: How the model was loaded: ``model`` (argument as given), ``kind`` (``packaged``, ``gguf``,
            ``dir``, ``hub``, ``endpoint`` or ``langchain``), ``source`` (directory, file, id or URL read),
            ``cache_hit`` (dequantized GGUF cache reused; ``None`` where no cache applies), ``shared_base``
            (weights already loaded for another model), ``load_s``, ``device``, ``dtype``, ``adapter``; engines add
            their own keys (``engine``, llama.cpp's ``threads`` ...).
    """

    is_chat: bool
    load_info: dict[str, Any]

    @property
    def name(self) -> str:
        """The model as given to the loader (for messages)."""
        ...

    @property
    def supports_logprobs(self) -> bool:
        """Whether :meth:`generate_scored` and :meth:`next_token_probabilities` work on this model."""
        ...

    @property
    def batch_size(self) -> int:
        """Prompts the model decodes together (forward-pass batch, parallel slots or requests in flight)."""
        ...

    @property
    def default_concurrency(self) -> int:
        """Questions an evaluation runs at once by default with this model."""
        ...

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)) -> list[str]:
        """Greedy completions of ``prompts`` (batched where the engine allows), each cut at the first stop string.

        Args:
            prompts: Completion strings for base models; chat message lists (or strings, read as
                one user message) for chat models.
            max_new_tokens: Generation budget per prompt (a wrapped LangChain model's own settings decide instead).
            stop: Strings that end a completion; the completion is returned without them.

        Returns:
            One completion per prompt, without the prompt text.

        Raises:
            ConfigError: ``max_new_tokens`` < 1, or chat messages given to a base model.
        """
        ...

    def generate_scored(
        self, prompts: Sequence[Prompt], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)
    ) -> list[ScoredText]:
        """Like :meth:`generate`, with the log-probability of every generated token.

        Raises:
            ConfigError: the model gives no probabilities (:attr:`supports_logprobs` is false).
        """
        ...

    def next_token_probabilities(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[dict[str, float]]:
        """For each prompt, the probability that the next token is each of ``candidates`` (one forward pass).

        Raises:
            ConfigError: the model gives no probabilities (:attr:`supports_logprobs` is false).
        """
        ...

    def generate_samples(
        self,
        prompts: Sequence[Prompt],
        n: int,
        *,
        temperature: float,
        seed: int,
        max_new_tokens: int = 32,
        stop: Sequence[str] = ("\n",),
    ) -> list[list[str]]:
        """``n`` sampled (not greedy) completions of each prompt at ``temperature``, reproducible for ``seed``.

        Raises:
            ConfigError: the engine does not sample (only the transformers and llama.cpp engines do), or bad values.
        """
        ...

    def call_tools(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        max_new_tokens: int = 128,
        tool_choice: str = "auto",
    ) -> ToolReply:
        """One assistant turn of a conversation (OpenAI-style ``messages``) in which the model may call ``tools``
        (OpenAI function specs). Greedy; the turn's text and the calls it makes (none: a final answer).
        ``tool_choice`` is ``auto`` (the model decides) or ``required`` (it must call a tool)."""
        ...


class LLMBase(ABC):
    """What the engines share: prompt checks, stop strings, no probabilities unless an engine gives them, and the
    engine-neutral tool-calling turn. An engine implements :meth:`_complete` and overrides what it does better.

    Attributes:
        is_chat: Whether prompts must be chat messages (``True``) or completion strings (``False``).
        load_info: How the model was loaded (see :class:`LLM`).
    """

    def __init__(self, *, is_chat: bool, load_info: dict[str, Any] | None = None) -> None:
        self.is_chat = is_chat
        self.load_info: dict[str, Any] = dict(load_info or {})

    @property
    def name(self) -> str:
        """The model as given to the loader (``load_info["model"]``), for messages."""
        return str(self.load_info.get("model", "this model"))

    @abstractmethod
    def _complete(self, inputs: list[Any], stops: list[str], max_new_tokens: int) -> list[str]:
        """Raw completions of checked, non-empty ``inputs`` (strings or message lists); :meth:`generate` cuts them at
        the ``stops``."""

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)) -> list[str]:
        """Greedy completions of ``prompts``, each cut at the first stop string (see :meth:`LLM.generate`).

        Raises:
            ConfigError: ``max_new_tokens`` < 1, or chat messages given to a base model.
        """
        self._check_prompts(prompts, max_new_tokens)
        stops = [s for s in stop if s]
        inputs = [prompt if isinstance(prompt, str) else list(prompt) for prompt in prompts]
        if not inputs:
            return []
        return [truncate_at_stop(text, stops) for text in self._complete(inputs, stops, max_new_tokens)]

    def _check_prompts(self, prompts: Sequence[Prompt], max_new_tokens: int) -> None:
        """Raise ``ConfigError`` for a token budget below 1 or chat messages sent to a base model."""
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not self.is_chat and any(not isinstance(prompt, str) for prompt in prompts):
            raise ConfigError("this model is not a chat model: build completion prompts (str), not messages")

    @property
    def supports_logprobs(self) -> bool:
        """Whether :meth:`generate_scored` and :meth:`next_token_probabilities` work on this model (not by default)."""
        return False

    def generate_scored(
        self, prompts: Sequence[Prompt], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)
    ) -> list[ScoredText]:
        """Completions with token log-probabilities; engines that give them override this.

        Raises:
            ConfigError: always (the model gives no probabilities).
        """
        raise ConfigError(f"{self.name} gives no token probabilities")

    def next_token_probabilities(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[dict[str, float]]:
        """Next-token probabilities of ``candidates``; engines that give them override this.

        Raises:
            ConfigError: always (the model gives no probabilities).
        """
        raise ConfigError(f"{self.name} gives no token probabilities")

    def generate_samples(
        self,
        prompts: Sequence[Prompt],
        n: int,
        *,
        temperature: float,
        seed: int,
        max_new_tokens: int = 32,
        stop: Sequence[str] = ("\n",),
    ) -> list[list[str]]:
        """Sampled completions; engines that sample override this (see :meth:`LLM.generate_samples`).

        Raises:
            ConfigError: always (the engine only decodes greedily).
        """
        raise ConfigError(f"{self.name} does not sample answers; use the transformers or llama.cpp engine")

    def _check_sampling(self, prompts: Sequence[Prompt], n: int, temperature: float, max_new_tokens: int) -> None:
        """Raise ``ConfigError`` for a bad sample count or temperature (and what :meth:`_check_prompts` refuses)."""
        self._check_prompts(prompts, max_new_tokens)
        if n < 1:
            raise ConfigError(f"samples per prompt must be >= 1, got {n}")
        if temperature <= 0:
            raise ConfigError(f"sampling temperature must be > 0, got {temperature}")

    @property
    def batch_size(self) -> int:
        """Prompts decoded together: 1 unless the engine batches."""
        return 1

    @property
    def default_concurrency(self) -> int:
        """Questions an evaluation runs at once by default: 1 unless the engine batches."""
        return 1

    def call_tools(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        max_new_tokens: int = 128,
        tool_choice: str = "auto",
    ) -> ToolReply:
        """One assistant turn in which the model may call ``tools`` (see :meth:`LLM.call_tools`).

        This engine-neutral version writes the tools and earlier calls into the messages in Qwen2.5's (Hermes)
        format and parses ``<tool_call>`` blocks back; engines that apply the model's own chat template with
        tools (llama.cpp) override it. A model without a chat template (a base model) gets the conversation as
        ChatML text (:func:`~zhrag.models.tool_calls.tool_chat_prompt`), the format a tool-use adapter teaches it;
        ``required`` with one tool prefills the opening of a call to it.
        """
        required = tool_choice == "required"
        if not self.is_chat:
            prefix = call_prefill(list(tools), tool_choice)
            prompt = tool_chat_prompt(list(messages), list(tools), required=required) + prefix
            [text] = self.generate([prompt], max_new_tokens=max_new_tokens, stop=(TURN_END,))
            text = prefix + text
            return ToolReply(content=text.strip(), calls=tuple(parse_tool_calls(text)))
        kinds = {"system": SystemMessage, "assistant": AIMessage}
        rendered = render_tool_messages(list(messages), list(tools), required=required)
        conversation = [kinds.get(m["role"], HumanMessage)(content=m["content"]) for m in rendered]
        [text] = self.generate([conversation], max_new_tokens=max_new_tokens, stop=())
        return ToolReply(content=text.strip(), calls=tuple(parse_tool_calls(text)))
