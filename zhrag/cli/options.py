"""The options of several commands, each declared once here, and option groups handed to a command as one object.

Single options are ``Annotated`` types (``ForceOpt``, ``DeviceOpt``, ...) or, where each command words its help
itself, a function that makes the option with that help (``out_option``, ``force_option``, ``model_option``).

A command names a group by a parameter annotated with its dataclass (``models: ModelOptions``); the
:func:`with_option_groups` decorator replaces that parameter by the group's fields as Typer options (their
``Annotated`` declarations carry the flags and help) and, on a call, collects them back into the dataclass.
So ``zhrag ask``, ``eval`` and ``demo`` share one declaration of every model, graph and store option, and
``eval-reading``, ``eval-tools`` and ``eval-judge`` one of their model, adapter, engine and device
(:func:`single_model_options`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from zhrag import settings


def out_option(help: str) -> Any:
    """``--out`` / ``-o``: where a command writes, in the command's own words."""
    return typer.Option("--out", "-o", help=help)


def force_option(help: str) -> Any:
    """``--force``: what a command replaces when OUT holds other work, in the command's own words."""
    return typer.Option("--force", help=help)


def model_option(role: str) -> Any:
    """``--model`` of the model in ``role`` (e.g. "Answer"): any source :func:`zhrag.models.load_llm` loads."""
    return typer.Option(help=f"{role} model: packaged alias, .gguf file, HF directory or hub id.")


def adapter_option(role: str, *aliases: str) -> Any:
    """``--adapter`` (and ``aliases``, e.g. ``--judge-adapter``) of the model in ``role`` (e.g. "judge")."""
    return typer.Option("--adapter", *aliases, help=f"LoRA adapter of the {role} model.")


RerankerOpt = Annotated[
    str | None, typer.Option(help="evidence (offline, default), none, or a sentence-transformers cross-encoder.")
]
EngineOpt = Annotated[str, typer.Option(help="auto (llama.cpp for GGUF models without adapter, else transformers), llama.cpp or transformers.")]
RunOutOpt = Annotated[Path, out_option("Run folder; re-running resumes it.")]
ForceOpt = Annotated[bool, force_option("Start afresh when OUT holds a run with other settings.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or mps (default: auto).")]
KbOpt = Annotated[
    list[Path] | None,
    typer.Option("--kb", help="Source(s) indexed on first use when the collection is empty (default: shared KB)."),
]
PassageKbOpt = Annotated[Path | None, typer.Option(help="Knowledge-base source of the passages (default: shared KB).")]
SampleOpt = Annotated[
    int | None,
    typer.Option(help="A seeded random sample of N questions / examples over the whole set (all categories and sources)."),
]
SeedOpt = Annotated[int, typer.Option(help="Seed of --sample.")]


@dataclass
class ModelOptions:
    """Which models answer and judge, and where they run."""

    model: Annotated[
        str,
        typer.Option(
            help="Answer model: packaged alias (qwen2.5-coder-1.5b, qwen2.5-coder-0.5b, gemma3-270m), .gguf file, "
            "HF directory, hub id, or the name served by --model-base-url."
        ),
    ] = settings.DEFAULT_LLM
    engine: EngineOpt = "auto"
    answer_adapter: Annotated[
        str | None, typer.Option("--adapter", "--answer-adapter", help="LoRA adapter for answering (transformers engine).")
    ] = None
    judge_model: Annotated[str | None, typer.Option(help="A2 judge / requery model (default: the answer model).")] = None
    judge_adapter: Annotated[str | None, typer.Option(help="LoRA adapter for the A2 judge.")] = None
    model_base_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible endpoint serving --model, e.g. http://localhost:8000/v1 (key: OPENAI_API_KEY)."),
    ] = None
    judge_base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint serving the judge (default: --model-base-url).")
    ] = None
    planner_model: Annotated[str | None, typer.Option(help="A4 planner's model (default: the answer model).")] = None
    planner_adapter: Annotated[str | None, typer.Option(help="LoRA adapter for the A4 planner.")] = None
    planner_base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint serving the A4 planner (default: --model-base-url).")
    ] = None
    evaluator_model: Annotated[str | None, typer.Option(help="A4 evaluator's model (default: the answer model).")] = None
    evaluator_adapter: Annotated[str | None, typer.Option(help="LoRA adapter for the A4 evaluator.")] = None
    evaluator_base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint serving the A4 evaluator (default: --model-base-url).")
    ] = None
    device: DeviceOpt = None
    dtype: Annotated[str | None, typer.Option(help="bfloat16, float16 or float32 (transformers engine; default: per device).")] = None
    max_new_tokens: Annotated[int, typer.Option(help="Answer generation budget (1..512).")] = 32


@dataclass
class SingleModelOptions:
    """The one model a command loads (eval-reading, eval-tools, eval-judge): which, its adapter, engine and device.

    Commands take the subclass :func:`single_model_options` makes, whose help names the model's role.
    """

    model: str = settings.DEFAULT_LLM
    adapter: str | None = None
    engine: str = "auto"
    device: str | None = None


def single_model_options(role: str, adapter_alias: str) -> type[SingleModelOptions]:
    """:class:`SingleModelOptions` whose help speaks of the ``role`` model ("answer", "agent", "judge") and whose
    ``--adapter`` is also ``adapter_alias`` (e.g. ``--judge-adapter``)."""
    fields = [
        ("model", Annotated[str, model_option(role.capitalize())], settings.DEFAULT_LLM),
        ("adapter", Annotated[str | None, adapter_option(role, adapter_alias)], None),
        ("engine", EngineOpt, "auto"),
        ("device", DeviceOpt, None),
    ]
    return dataclasses.make_dataclass(
        f"{role.capitalize()}ModelOptions",
        [(name, hint, dataclasses.field(default=default)) for name, hint, default in fields],
        bases=(SingleModelOptions,),
    )


@dataclass
class GraphOptions:
    """The knobs of the graph variants."""

    top_k: Annotated[int, typer.Option(help="Passages per retrieval round (1..50).")] = 3
    max_requeries: Annotated[int, typer.Option(help="A2: maximum query rewrites.")] = 2
    max_tool_rounds: Annotated[int, typer.Option(help="A3: most rounds of qdrant-find calls the agent makes (0..5).")] = 2
    judge_threshold: Annotated[
        float | None, typer.Option(help="A2: keep passages whose judge score P(是)/(P(是)+P(否)) reaches this (default: calibrated).")
    ] = None
    a2_fallback: Annotated[
        str, typer.Option(help="A2 when nothing is kept: closed_book or top_passage (the best rejected passage).")
    ] = "closed_book"
    a2_arbiter: Annotated[
        str, typer.Option(help="A2: choose the answer's knowledge by the arbitration rule (rule) or the judge alone (judge).")
    ] = "rule"
    a2_candidates: Annotated[
        str, typer.Option(help="A2: answer on the paths the arbiter needs (needed) or on every path (all).")
    ] = "needed"
    arbiter_stated_score: Annotated[
        float | None, typer.Option(help="A2 rule: best judge score for a stated grounded answer (default: fitted).")
    ] = None
    arbiter_closed_confidence: Annotated[
        float | None, typer.Option(help="A2 rule: confidence for the closed-book answer (default: fitted).")
    ] = None
    arbiter_grounded_confidence: Annotated[
        float | None, typer.Option(help="A2 rule: confidence for an unstated grounded answer (default: fitted).")
    ] = None
    max_review_rounds: Annotated[
        int, typer.Option(help="A4: most times the evaluator sends the work back to the researcher (0..3).")
    ] = 1
    quote_threshold: Annotated[
        float, typer.Option(help="A4: judge score a researcher's quote needs to reach the answerer.")
    ] = 0.5
    evaluator_threshold: Annotated[
        float | None,
        typer.Option(help="A4: the evaluator accepts an answer no quote states when its model's P(是) reaches this "
                     "(default: tuned)."),
    ] = None
    stated_threshold: Annotated[
        float | None,
        typer.Option(help="A4: the evaluator accepts an answer a quote states when its best quote's score reaches this "
                     "(default: tuned)."),
    ] = None
    abstain_below: Annotated[
        float | None, typer.Option(help="Answer 不知道 when the answer's confidence is below this (default: never).")
    ] = None


@dataclass
class StoreOptions:
    """Where the knowledge base is stored and how it is embedded."""

    collection: Annotated[
        str | None,
        typer.Option(help="Qdrant collection of the knowledge base; default: the embedder's (zhrag_kb_e5 for e5)."),
    ] = None
    qdrant_url: Annotated[
        str | None, typer.Option(help="Qdrant server URL (env ZHRAG_QDRANT_URL); default: embedded storage.")
    ] = None
    qdrant_path: Annotated[Path | None, typer.Option(help="Embedded Qdrant directory (env ZHRAG_QDRANT_PATH).")] = None
    qdrant_engine: Annotated[
        str | None,
        typer.Option(help="Embedded engine: edge (Qdrant Edge, default) or local (qdrant-client; env ZHRAG_QDRANT_ENGINE)."),
    ] = None
    embedder: Annotated[
        str,
        typer.Option(
            help="Dense embedder: all-minilm-l6-v2, multilingual-e5-small or use-multilingual (packaged), a local "
            "sentence-transformers path or a hub id."
        ),
    ] = settings.DEFAULT_EMBEDDER
    mcp_url: Annotated[
        str | None,
        typer.Option(
            help="A running knowledge server's MCP endpoint (zhrag serve-mcp --transport streamable-http; env "
            "ZHRAG_MCP_URL, token ZHRAG_MCP_TOKEN) used by graphs and search instead of opening the store."
        ),
    ] = None

    def resolved(self) -> StoreOptions:
        """These options with the environment's defaults filled in (URLs, engine) and the path as a string."""
        return dataclasses.replace(
            self,
            qdrant_url=self.qdrant_url or settings.qdrant_url(),
            qdrant_engine=self.qdrant_engine or settings.qdrant_engine(),
            mcp_url=self.mcp_url or settings.mcp_url(),
            collection=self.collection or settings.default_collection(self.embedder),
        )


def fields_of(*groups: Any) -> dict[str, Any]:
    """The fields of option groups as one keyword dictionary (paths as strings, unset optional values dropped
    where the run context has its own default)."""
    values: dict[str, Any] = {}
    for group in groups:
        for name, value in dataclasses.asdict(group).items():
            values[name] = str(value) if isinstance(value, Path) else value
    calibrated = ("judge_threshold", "evaluator_threshold", "stated_threshold", "arbiter_stated_score",
                  "arbiter_closed_confidence", "arbiter_grounded_confidence")
    for name in calibrated:  # None: the context's calibrated default
        if name in values and values[name] is None:
            del values[name]
    return values


def with_option_groups(command: Callable[..., Any]) -> Callable[..., Any]:
    """Expand the option-group parameters of ``command`` into Typer options (see the module doc)."""
    signature = inspect.signature(command)
    hints = get_type_hints(command, include_extras=True)
    parameters: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, list[str]]] = {}
    for parameter in signature.parameters.values():
        annotation = hints.get(parameter.name, parameter.annotation)
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            group_hints = get_type_hints(annotation, include_extras=True)
            names = [field.name for field in dataclasses.fields(annotation)]
            groups[parameter.name] = (annotation, names)
            for field in dataclasses.fields(annotation):
                parameters.append(
                    inspect.Parameter(
                        field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=group_hints[field.name]
                    )
                )
        else:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=annotation))
    taken = [parameter.name for parameter in parameters]
    if len(set(taken)) != len(taken):
        raise TypeError(f"{command.__name__}: option names collide: {sorted({n for n in taken if taken.count(n) > 1})}")

    @functools.wraps(command)
    def run(**kwargs: Any) -> Any:
        for name, (group, names) in groups.items():
            kwargs[name] = group(**{field: kwargs.pop(field) for field in names})
        return command(**kwargs)

    run.__signature__ = signature.replace(parameters=parameters, return_annotation=signature.return_annotation)  # type: ignore[attr-defined]
    run.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return run
