"""``LocalLLM``: a language model run in this process through LangChain, the transformers engine's model.

A model loaded by :func:`~zhrag.models.load_llm` on the transformers engine wraps LangChain's Hugging Face pipeline
over an :class:`~zhrag.models.hf_runtime.HFRuntime` (shared weights, adapters, micro-batching, token
probabilities); :meth:`LocalLLM.from_langchain` wraps any other LangChain model (a fake chat model in tests), which
generates text only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel, BaseLanguageModel

from zhrag.errors import ConfigError
from zhrag.models.base import LLMBase, Prompt, ScoredText, truncate_at_stop

if TYPE_CHECKING:
    from zhrag.models.hf_runtime import HFRuntime


class LocalLLM(LLMBase):
    """An in-process LangChain model behind the :class:`~zhrag.models.base.LLM` protocol.

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
        super().__init__(is_chat=is_chat, load_info=load_info)
        self.model = model
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

    def _complete(self, inputs: list[Any], stops: list[str], max_new_tokens: int) -> list[str]:
        """Completions from the transformers runtime (calls made at the same time from several threads with the same
        adapter, ``max_new_tokens`` and ``stop`` share forward passes, see :mod:`zhrag.models.batching`), or from a
        wrapped LangChain model's ``batch`` (its own settings decide the length)."""
        if self._runtime is not None:
            return self._runtime.generate_batched(
                inputs, adapter_name=self.adapter_name, max_new_tokens=max_new_tokens, stop=stops
            )
        outputs = self.model.batch(inputs, stop=stops or None)
        return [output if isinstance(output, str) else output.text for output in outputs]

    @property
    def supports_logprobs(self) -> bool:
        """Whether :meth:`generate_scored` and :meth:`next_token_probabilities` work: on a transformers model."""
        return self._runtime is not None

    def generate_scored(
        self, prompts: Sequence[Prompt], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)
    ) -> list[ScoredText]:
        """Like :meth:`generate`, with the log-probability of every generated token.

        Raises:
            ConfigError: the model gives no probabilities (:attr:`supports_logprobs` is false).
        """
        if self._runtime is None:
            return super().generate_scored(prompts, max_new_tokens, stop)
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
        """``n`` completions per prompt sampled at ``temperature`` (seeded; transformers models only).

        Raises:
            ConfigError: not a local transformers model, or a bad count or temperature.
        """
        if self._runtime is None:
            return super().generate_samples(
                prompts, n, temperature=temperature, seed=seed, max_new_tokens=max_new_tokens, stop=stop
            )
        self._check_sampling(prompts, n, temperature, max_new_tokens)
        stops = [s for s in stop if s]
        samples = self._runtime.generate_samples(
            [prompt if isinstance(prompt, str) else list(prompt) for prompt in prompts], adapter_name=self.adapter_name,
            n=n, temperature=temperature, seed=seed, max_new_tokens=max_new_tokens, stop=stops,
        )
        return [[truncate_at_stop(text, stops) for text in texts] for texts in samples]

    def next_token_probabilities(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[dict[str, float]]:
        """For each prompt, the probability that the next token is each of ``candidates`` (one forward pass).

        Raises:
            ConfigError: the model gives no probabilities (:attr:`supports_logprobs` is false).
        """
        if self._runtime is None:
            return super().next_token_probabilities(prompts, candidates)
        self._check_prompts(prompts, 1)
        return self._runtime.next_token_probabilities(
            [prompt if isinstance(prompt, str) else list(prompt) for prompt in prompts],
            candidates, adapter_name=self.adapter_name,
        )

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
            raise ConfigError(f"{self.name} is not a local Hugging Face model")
        with self._runtime.using(self.adapter_name):
            yield self._runtime.model, self._runtime.tokenizer
