"""``LocalLLM``: one LangChain language model behind a small, greedy, batched ``generate`` call.

Graph nodes only call :meth:`LocalLLM.generate`; whether the model is a local Hugging Face model
(see :mod:`zhrag.models.hf_runtime`) or any other LangChain model (a fake chat model in tests, a
hosted model) is hidden behind it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from zhrag.errors import ConfigError
from zhrag.prompts.agent import (
    TURN_END,
    ToolReply,
    call_prefill,
    parse_tool_calls,
    render_tool_messages,
    tool_chat_prompt,
)

if TYPE_CHECKING:
    from zhrag.models.hf_runtime import HFRuntime

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
        for token, logprob in zip(self.tokens, self.logprobs):
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


class LocalLLM:
    """A LangChain model with the generation interface the graph nodes use.

    Attributes:
        model: The LangChain model: ``HuggingFacePipeline`` for local base models, ``ChatHuggingFace``
            for local models whose tokenizer has a chat template, or whatever was wrapped by
            :meth:`from_langchain`.
        is_chat: Whether prompts must be chat messages (``True``) or completion strings (``False``).
        load_info: How the model was loaded: ``model`` (argument as given), ``kind`` (``packaged``,
            ``gguf``, ``dir``, ``hub`` or ``langchain``), ``source`` (directory or id read),
            ``cache_hit`` (dequantized GGUF cache reused; ``None`` where no cache applies),
            ``shared_base`` (base weights were already loaded for another adapter), ``load_s``,
            ``device``, ``dtype``, ``adapter``.
        adapter_name: Name of this model's PEFT adapter inside the shared base model, if any.
    """

    def __init__(
        self,
        model: BaseLanguageModel,
        *,
        is_chat: bool,
        load_info: dict[str, Any] | None = None,
        runtime: HFRuntime | None = None,
        adapter_name: str | None = None,
    ) -> None:
        self.model = model
        self.is_chat = is_chat
        self.load_info: dict[str, Any] = dict(load_info or {})
        self.adapter_name = adapter_name
        self._runtime = runtime

    @classmethod
    def from_langchain(cls, model: BaseLanguageModel, is_chat: bool | None = None) -> LocalLLM:
        """Wrap any LangChain LLM or chat model; ``is_chat`` defaults to whether it is a chat model.

        Generation goes through ``model.batch`` with the stop strings; the model's own settings
        decide the length (``max_new_tokens`` only applies to local Hugging Face models).
        """
        chat = isinstance(model, BaseChatModel) if is_chat is None else is_chat
        info = {"model": type(model).__name__, "kind": "langchain", "source": type(model).__name__,
                "cache_hit": None, "shared_base": False, "load_s": 0.0, "device": None, "dtype": None,
                "adapter": None}
        return cls(model, is_chat=chat, load_info=info)

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)) -> list[str]:
        """Greedy completions of ``prompts`` (batched where the model allows), each cut at the first stop string.

        On a local Hugging Face model, calls made at the same time from several threads with the same
        adapter, ``max_new_tokens`` and ``stop`` share forward passes (see :mod:`zhrag.models.batching`).

        Args:
            prompts: Completion strings for base models; chat message lists (or strings, read as
                one user message) for chat models.
            max_new_tokens: Generation budget per prompt (local Hugging Face models).
            stop: Strings that end a completion; the completion is returned without them.

        Returns:
            One completion per prompt, without the prompt text.

        Raises:
            ConfigError: ``max_new_tokens`` < 1, or chat messages given to a base model.
        """
        self._check_prompts(prompts, max_new_tokens)
        stops = [s for s in stop if s]
        inputs = [prompt if isinstance(prompt, str) else list(prompt) for prompt in prompts]
        if not inputs:
            return []
        if self._runtime is not None:
            texts = self._runtime.generate_batched(
                inputs, adapter_name=self.adapter_name, max_new_tokens=max_new_tokens, stop=stops
            )
        else:
            texts = self._batch(inputs, stops, max_new_tokens)
        return [truncate_at_stop(text, stops) for text in texts]

    def _check_prompts(self, prompts: Sequence[Prompt], max_new_tokens: int) -> None:
        """Raise ``ConfigError`` for a token budget below 1 or chat messages sent to a base model."""
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not self.is_chat and any(not isinstance(prompt, str) for prompt in prompts):
            raise ConfigError("this model is not a chat model: build completion prompts (str), not messages")

    @property
    def supports_logprobs(self) -> bool:
        """Whether :meth:`generate_scored` and :meth:`next_token_probabilities` work on this model."""
        return self._runtime is not None

    def generate_scored(
        self, prompts: Sequence[Prompt], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)
    ) -> list[ScoredText]:
        """Like :meth:`generate`, with the log-probability of every generated token.

        Raises:
            ConfigError: the model gives no probabilities (:attr:`supports_logprobs` is false).
        """
        if self._runtime is None:
            raise ConfigError(f"{self.load_info.get('model', 'this model')} gives no token probabilities")
        self._check_prompts(prompts, max_new_tokens)
        stops = [s for s in stop if s]
        scored = self._runtime.generate_scored(
            [prompt if isinstance(prompt, str) else list(prompt) for prompt in prompts],
            adapter_name=self.adapter_name, max_new_tokens=max_new_tokens, stop=stops,
        )
        return [
            ScoredText(text=truncate_at_stop(item.text, stops), tokens=item.tokens, logprobs=item.logprobs)
            for item in scored
        ]

    def next_token_probabilities(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[dict[str, float]]:
        """For each prompt, the probability that the next token is each of ``candidates`` (one forward pass).

        Raises:
            ConfigError: the model gives no probabilities (:attr:`supports_logprobs` is false).
        """
        if self._runtime is None:
            raise ConfigError(f"{self.load_info.get('model', 'this model')} gives no token probabilities")
        self._check_prompts(prompts, 1)
        return self._runtime.next_token_probabilities(
            [prompt if isinstance(prompt, str) else list(prompt) for prompt in prompts],
            candidates, adapter_name=self.adapter_name,
        )

    def call_tools(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        max_new_tokens: int = 128,
        tool_choice: str = "auto",
    ) -> ToolReply:
        """One assistant turn of a conversation (OpenAI-style ``messages``) in which the model may call ``tools``
        (OpenAI function specs). Greedy; the turn's text and the calls it makes (none: a final answer).
        ``tool_choice`` is ``auto`` (the model decides) or ``required`` (it must call a tool).

        This engine-neutral version writes the tools and earlier calls into the messages in Qwen2.5's (Hermes)
        format and parses ``<tool_call>`` blocks back; engines that apply the model's own chat template with
        tools (llama.cpp) override it. A model without a chat template (a base model) gets the conversation as
        ChatML text (:func:`~zhrag.prompts.agent.tool_chat_prompt`), the format a tool-use adapter teaches it;
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
        prompt = [kinds.get(m["role"], HumanMessage)(content=m["content"]) for m in rendered]
        [text] = self.generate([prompt], max_new_tokens=max_new_tokens, stop=())
        return ToolReply(content=text.strip(), calls=tuple(parse_tool_calls(text)))

    def _batch(self, inputs: list[Any], stops: list[str], max_new_tokens: int) -> list[str]:
        """Raw completions of a wrapped LangChain model (its own settings decide the length)."""
        outputs = self.model.batch(inputs, stop=stops or None)
        return [output if isinstance(output, str) else output.text for output in outputs]

    @property
    def batch_size(self) -> int:
        """Prompts one forward pass takes on this model's device (the micro-batcher's limit); 1 without a local model."""
        return self._runtime.batcher.max_batch if self._runtime is not None else 1

    @property
    def default_concurrency(self) -> int:
        """Questions an evaluation runs at once by default with this model (1 on CPU; 1 without a local model)."""
        return self._runtime.concurrency if self._runtime is not None else 1

    @contextmanager
    def hf_model(self) -> Iterator[tuple[Any, Any]]:
        """The underlying transformers model (with this LLM's adapter active) and tokenizer.

        The shared model is locked for the duration of the block, so other LLMs on the same base
        weights cannot switch adapters meanwhile.

        Raises:
            ConfigError: this LLM does not wrap a local Hugging Face model.
        """
        if self._runtime is None:
            raise ConfigError(f"{self.load_info.get('model', 'this model')} is not a local Hugging Face model")
        with self._runtime.using(self.adapter_name):
            yield self._runtime.model, self._runtime.tokenizer
