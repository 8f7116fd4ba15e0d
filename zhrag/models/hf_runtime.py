"""The transformers engine's runtime: one loaded transformers model, shared by every ``LocalLLM`` built on it.

The model and tokenizer sit behind one transformers ``text-generation`` pipeline. LoRA adapters are
added to the same model through transformers' PEFT integration (``load_adapter``), so an answer model
and a judge model that differ only in their adapter share the base weights; each generation call
activates its own adapter (or disables all of them) under a lock. :meth:`HFRuntime.generate_batched`
lets concurrent callers (threads answering different questions) share forward passes through a
:class:`~zhrag.models.batching.MicroBatcher`, one batch per adapter, token budget and stop set.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseLanguageModel

from zhrag.compat import check_lora_stack
from zhrag.errors import ModelLoadError
from zhrag.models.base import ScoredText, chat_dicts
from zhrag.models.batching import MicroBatcher, default_concurrency, max_batch_for, max_wait_s
from zhrag.models.failures import first_line

#: Training card ``zhrag train`` writes beside an adapter; its ``base_model`` is checked when the adapter loads.
TRAINING_CARD_FILE = "training_card.json"
#: Prompts per forward pass (transformers pipeline batch size) by device type.
BATCH_SIZE = {"cpu": 8, "mps": 16, "cuda": 32}


class HFRuntime:
    """A transformers causal LM, its tokenizer and text-generation pipeline, and the adapters loaded into it.

    Attributes:
        model: The transformers model (PEFT adapters, when loaded, live inside it).
        tokenizer: Its tokenizer (left padding, a pad token set).
        is_chat: Whether the tokenizer has a chat template.
        batch_size: Prompts per forward pass of the pipeline.
        batcher: Coalesces concurrent :meth:`generate_batched` calls (``max_batch`` chosen per device).
        concurrency: Questions an evaluation runs at once by default on this device
            (:func:`~zhrag.models.batching.default_concurrency`).
    """

    def __init__(self, model: Any, tokenizer: Any, device: str) -> None:
        from transformers import pipeline

        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.model = model
        self.tokenizer = tokenizer
        self.is_chat = bool(getattr(tokenizer, "chat_template", None))
        self.batch_size = BATCH_SIZE[device.partition(":")[0]]
        self._pipeline = pipeline(
            "text-generation", model=model, tokenizer=tokenizer, device=device, batch_size=self.batch_size
        )
        self._lock = threading.RLock()
        self._adapters: dict[str, str] = {}
        self._stopping: dict[tuple[str, ...], Any] = {}
        self._langchain: BaseLanguageModel | None = None
        self.batcher = MicroBatcher(
            self._run_batch, max_batch=max_batch_for(device), max_wait_s=max_wait_s(), run_lock=self._lock
        )
        self.concurrency = default_concurrency(device)

    def langchain_model(self) -> BaseLanguageModel:
        """A LangChain model over the pipeline: ``ChatHuggingFace`` with a chat template, else ``HuggingFacePipeline``.

        Built once; every ``LocalLLM`` on this runtime shares it. The tokenizer is passed to
        ``ChatHuggingFace`` explicitly, so it never looks one up on the Hub.
        """
        from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline

        with self._lock:
            if self._langchain is None:
                llm = HuggingFacePipeline(pipeline=self._pipeline, batch_size=self.batch_size)
                self._langchain = ChatHuggingFace(llm=llm, tokenizer=self.tokenizer) if self.is_chat else llm
            return self._langchain

    @property
    def has_adapters(self) -> bool:
        """Whether an adapter has been loaded into the model."""
        return bool(self._adapters)

    def add_adapter(self, path: str, model_label: str) -> str:
        """Load the PEFT adapter directory ``path`` into the model (once) and return its adapter name.

        Raises:
            ModelLoadError: the adapter does not fit the model (other architecture or sizes), or it
                records a base model that clearly differs (see :meth:`_other_base_problem`). The model
                is left as it was.
            ConfigError: the installed transformers and peft are an incompatible pair.
        """
        check_lora_stack()
        with self._lock:
            if path in self._adapters:
                return self._adapters[path]
            name = f"adapter_{len(self._adapters)}"
            recorded = _recorded_base(path)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.model.load_adapter(path, adapter_name=name)
            except (RuntimeError, ValueError, KeyError, TypeError, OSError) as error:
                self._drop_adapter(name)
                raise ModelLoadError(f"adapter {path} does not fit model {model_label}: {_adapter_problem(error)}") from error
            problem = self._other_base_problem(recorded)
            if problem:
                self._drop_adapter(name)
                raise ModelLoadError(f"adapter {path} was trained on {problem}, not on model {model_label}")
            self._adapters[path] = name
            return name

    @contextmanager
    def using(self, adapter_name: str | None) -> Iterator[None]:
        """Lock the model and activate ``adapter_name`` (``None``: no adapter) for the block."""
        with self._lock:
            if self._adapters:
                if adapter_name is None:
                    self.model.disable_adapters()
                else:
                    self.model.enable_adapters()
                    self.model.set_adapter(adapter_name)
            yield

    def generate(
        self,
        langchain_model: BaseLanguageModel,
        prompts: Sequence[str | list[Any]],
        *,
        adapter_name: str | None,
        max_new_tokens: int,
        stop: Sequence[str],
    ) -> list[str]:
        """Greedy completions through ``langchain_model`` (one of :meth:`langchain_model`'s results).

        Base models get all prompts in one ``batch`` call (``batch_size`` prompts per forward pass,
        left padded); chat models go through ``ChatHuggingFace`` one conversation at a time, as
        its chat template already holds the special tokens. ``stop`` also ends generation early
        (cached transformers ``StopStringCriteria``); the completions still contain the stop string.
        """
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False, "return_full_text": False}
        if stop:
            kwargs["stopping_criteria"] = self._stop_criteria(tuple(stop))
        with self.using(adapter_name):
            if not self.is_chat:
                return langchain_model.batch(list(prompts), stop=list(stop) or None, pipeline_kwargs=kwargs)
            chat_kwargs = {**kwargs, "add_special_tokens": False}
            return [
                langchain_model.invoke(prompt, stop=list(stop) or None, pipeline_kwargs=chat_kwargs).text
                for prompt in prompts
            ]

    def generate_batched(
        self,
        prompts: Sequence[str | list[Any]],
        *,
        adapter_name: str | None,
        max_new_tokens: int,
        stop: Sequence[str],
    ) -> list[str]:
        """Like :meth:`generate` on :meth:`langchain_model`, batched with concurrent calls that share the settings.

        Calls from other threads with the same adapter, ``max_new_tokens`` and ``stop`` join one batch
        (see :mod:`zhrag.models.batching`); calls with another adapter form their own batch, so an
        answer adapter and a judge adapter never share a forward pass.
        """
        return self.batcher.submit((adapter_name, max_new_tokens, tuple(stop)), prompts)

    def _encode(self, prompts: Sequence[str | list[Any]]) -> Any:
        """Left-padded input tensors of ``prompts`` on the model's device (chat messages through the chat template)."""
        if all(isinstance(prompt, str) for prompt in prompts):
            return self.tokenizer(list(prompts), return_tensors="pt", padding=True).to(self.model.device)
        texts = [
            self.tokenizer.apply_chat_template(chat_dicts(prompt), tokenize=False, add_generation_prompt=True)
            for prompt in prompts
        ]
        return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)

    def generate_scored(
        self,
        prompts: Sequence[str | list[Any]],
        *,
        adapter_name: str | None,
        max_new_tokens: int,
        stop: Sequence[str],
    ) -> list[ScoredText]:
        """Greedy completions with each generated token's log-probability, batched with concurrent calls like
        :meth:`generate_batched` (scored and plain calls never share a batch)."""
        return self.batcher.submit((adapter_name, max_new_tokens, tuple(stop), "scored"), prompts)

    def _generate_scored_now(
        self, prompts: Sequence[str | list[Any]], *, adapter_name: str | None, max_new_tokens: int, stop: Sequence[str]
    ) -> list[ScoredText]:
        """:meth:`generate_scored` for one batch, ``batch_size`` prompts per forward pass."""
        import torch

        results: list[ScoredText] = []
        with self.using(adapter_name), torch.no_grad():
            for start in range(0, len(prompts), self.batch_size):
                encoded = self._encode(prompts[start : start + self.batch_size])
                kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False}
                if stop:
                    kwargs["stopping_criteria"] = self._stop_criteria(tuple(stop))
                output = self.model.generate(
                    **encoded, **kwargs, output_scores=True, return_dict_in_generate=True,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                scores = self.model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
                generated = output.sequences[:, encoded["input_ids"].shape[1] :]
                for ids, logprobs in zip(generated, scores, strict=True):
                    kept = [(int(i), float(lp)) for i, lp in zip(ids, logprobs, strict=True) if int(i) != self.tokenizer.pad_token_id]
                    kept = [(i, lp) for i, lp in kept if i not in self._end_ids()]
                    tokens = tuple(self.tokenizer.decode([i]) for i, _ in kept)
                    results.append(
                        ScoredText(text="".join(tokens), tokens=tokens, logprobs=tuple(lp for _, lp in kept))
                    )
        return results

    def generate_samples(
        self,
        prompts: Sequence[str | list[Any]],
        *,
        adapter_name: str | None,
        n: int,
        temperature: float,
        seed: int,
        max_new_tokens: int,
        stop: Sequence[str],
    ) -> list[list[str]]:
        """``n`` completions of each prompt sampled at ``temperature`` (one prompt per ``generate`` call, the torch
        generator seeded with ``seed`` before each, so a prompt's samples do not depend on the others)."""
        import torch

        results: list[list[str]] = []
        with self.using(adapter_name), torch.no_grad():
            for prompt in prompts:
                encoded = self._encode([prompt])
                kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": True, "top_k": 0,
                                          "top_p": 1.0, "temperature": temperature, "num_return_sequences": n}
                if stop:
                    kwargs["stopping_criteria"] = self._stop_criteria(tuple(stop))
                torch.manual_seed(seed)
                output = self.model.generate(**encoded, **kwargs, pad_token_id=self.tokenizer.pad_token_id)
                generated = output[:, encoded["input_ids"].shape[1] :]
                results.append([self.tokenizer.decode(ids, skip_special_tokens=True) for ids in generated])
        return results

    def next_token_probabilities(
        self, prompts: Sequence[str | list[Any]], candidates: Sequence[str], *, adapter_name: str | None
    ) -> list[dict[str, float]]:
        """For each prompt, the probability that the next token is the first token of each candidate (one forward pass)."""
        import torch

        ids = {candidate: self.tokenizer.encode(candidate, add_special_tokens=False)[0] for candidate in candidates}
        results: list[dict[str, float]] = []
        with self.using(adapter_name), torch.no_grad():
            for start in range(0, len(prompts), self.batch_size):
                encoded = self._encode(prompts[start : start + self.batch_size])
                logits = self.model(**encoded, logits_to_keep=1).logits[:, -1, :].float()
                probabilities = torch.softmax(logits, dim=-1)
                for row in probabilities:
                    results.append({candidate: float(row[token]) for candidate, token in ids.items()})
        return results

    def _end_ids(self) -> set[int]:
        """Token ids that end a generation (EOS; for chat templates also the end-of-turn token)."""
        ends = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ends.update(configured if isinstance(configured, list) else [configured])
        return {token for token in ends if token is not None}

    def _run_batch(self, key: Any, prompts: list[Any]) -> list[Any]:
        """Generate one micro-batch: ``key`` is ``(adapter_name, max_new_tokens, stop)``, plus ``"scored"`` for
        :meth:`generate_scored` calls."""
        adapter_name, max_new_tokens, stop, *scored = key
        if scored:
            return self._generate_scored_now(
                prompts, adapter_name=adapter_name, max_new_tokens=max_new_tokens, stop=stop
            )
        return self.generate(
            self.langchain_model(), prompts, adapter_name=adapter_name, max_new_tokens=max_new_tokens, stop=stop
        )

    def _stop_criteria(self, stop: tuple[str, ...]) -> Any:
        """Transformers stop-string criteria for ``stop``, built once per stop set.

        Building ``StopStringCriteria`` walks the whole vocabulary (262k tokens for Gemma 3): passing
        ``stop_strings`` per call rebuilt it every time, 1.3 s of a 1.9 s short answer here. The criteria
        keep no state between calls, so one instance serves every generation and batch.
        """
        from transformers import StoppingCriteriaList, StopStringCriteria

        with self._lock:
            if stop not in self._stopping:
                self._stopping[stop] = StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(stop))])
            return self._stopping[stop]

    def _drop_adapter(self, name: str) -> None:
        """Remove a half-loaded or refused adapter, leaving the model as it was."""
        if name in getattr(self.model, "peft_config", {}):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # peft reports the switch of the active adapter
                self.model.delete_adapter(name)

    def _other_base_problem(self, recorded: dict[str, Any]) -> str | None:
        """How the base model an adapter records differs from this one, or ``None`` when it does not clearly differ.

        Names are compared by their last path part (the same model read from another folder or cache
        location matches); architecture fields are compared where the training card records them.
        """
        name = str(recorded.get("name_or_path") or "")
        ours = str(getattr(self.model, "name_or_path", "") or "")
        if name and ours and Path(name).name != Path(ours).name:
            return f"base model {name!r}"
        config = getattr(self.model, "config", None)
        for key, value in (recorded.get("architecture") or {}).items():
            actual = getattr(config, key, None)
            if value is not None and actual is not None and actual != value:
                return f"a base model with {key}={value!r} (this one has {actual!r})"
        return None


def _recorded_base(path: str) -> dict[str, Any]:
    """The base model an adapter directory records: ``name_or_path`` and, from a training card, ``architecture``.

    The training card written by ``zhrag train`` wins over peft's ``adapter_config.json``.
    """
    config_path = Path(path) / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read {config_path}: {first_line(error)}") from error
    recorded = {"name_or_path": config.get("base_model_name_or_path") if isinstance(config, dict) else None}
    card_path = Path(path) / TRAINING_CARD_FILE
    if card_path.is_file():
        try:
            base = json.loads(card_path.read_text(encoding="utf-8"))["base_model"]
            recorded = {"name_or_path": base["name_or_path"], "architecture": dict(base.get("architecture") or {})}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(f"cannot read the base model from {card_path}: {first_line(error)}") from error
    return recorded


def _adapter_problem(error: BaseException) -> str:
    """A one-line reason an adapter failed to load."""
    text = str(error)
    if "size mismatch" in text or "ignore_mismatched_sizes" in text:
        return "its weight shapes differ from the model's (adapter made for another base model)"
    return first_line(error)
