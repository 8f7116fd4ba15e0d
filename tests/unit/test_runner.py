"""The evaluation runner: records, resume without loss or duplicates, settings guard, early failures."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from zhrag.errors import ConfigError, DatasetError
from zhrag.evaluation.datasets import Question
from zhrag.evaluation.eval_settings import EvalSettings
from zhrag.evaluation.official_grader import JudgeError
from zhrag.evaluation.report import RESULTS_FILE, read_results
from zhrag.evaluation.runner import dataset_info, run_evaluation
from zhrag.graph.context import Context
from zhrag.kb.passage import Passage
from zhrag.models import LocalLLM, register_llm, unregister_llm
from zhrag.nodes import retrieve
from zhrag.run_folder import RUN_FILE

QUESTIONS = [
    Question(id=f"q{n}", question=f"第{n}号城位于哪个省？", answer=f"{n}号省", primary_category="地理")
    for n in range(1, 7)
]
PASSAGE = Passage(id="kb#1", title="3号城", text="3号城位于3号省北部。", score=1.0)


class CountingChatModel(BaseChatModel):
    """Answers "<n>号省" for question n; raises once it has answered ``fail_after`` prompts."""

    calls: int = 0
    fail_after: int | None = None

    @property
    def _llm_type(self) -> str:
        return "counting"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **_: Any) -> ChatResult:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        text = "\n".join(str(m.content) for m in messages)
        number = next(n for n in range(9, 0, -1) if f"第{n}号城" in text)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(f"{number}号省"))])


@pytest.fixture
def answer_model() -> Iterator[Callable[..., CountingChatModel]]:
    """``answer_model(fail_after=None)`` (re)registers the counting model under one name for the test."""
    name = f"fake-{uuid.uuid4().hex[:8]}"

    def install(fail_after: int | None = None) -> CountingChatModel:
        model = CountingChatModel(fail_after=fail_after)
        register_llm(name, LocalLLM.from_langchain(model, is_chat=True))
        return model

    install.name = name  # type: ignore[attr-defined]
    yield install
    unregister_llm(name)


@pytest.fixture(autouse=True)
def fake_knowledge(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeKnowledge:
        def find(self, query: str, top_k: int) -> list[Passage]:
            return [PASSAGE]

    monkeypatch.setattr(retrieve, "get_knowledge_client", lambda config: FakeKnowledge())


@pytest.fixture
def kb(tmp_path: Path) -> Path:
    """A two-document KB: it covers question 3 (answer and question words), not the others."""
    path = tmp_path / "kb.jsonl"
    rows = [
        {"id": "d1", "title": "3号城", "text": "3号城位于3号省北部。"},
        {"id": "d2", "title": "湖", "text": "白湖很大。"},
    ]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def evaluate(out: Path, model_name: str, kb: Path, **kwargs: Any) -> Path:
    options: dict[str, Any] = {"context": Context(model=model_name), "progress": False, "kb_sources": [kb]}
    options.update(kwargs)
    return run_evaluation(["a1", "a0"], QUESTIONS, out, **options)


def pairs(out: Path) -> list[tuple[str, str]]:
    return [(r["id"], r["variant"]) for r in read_results(out / RESULTS_FILE)]


def test_records_have_the_report_shape(tmp_path: Path, answer_model: Callable, kb: Path) -> None:
    answer_model()
    report = evaluate(tmp_path / "run", answer_model.name, kb)
    assert report == tmp_path / "run" / "report.md" and report.is_file()
    records = read_results(tmp_path / "run" / RESULTS_FILE)
    # question by question, variants in ablation order
    assert pairs(tmp_path / "run") == [(q.id, v) for q in QUESTIONS for v in ("a0", "a1")]
    first_a1 = records[1]
    assert first_a1["answer"] == "1号省" and first_a1["gold"] == "1号省" and first_a1["grade"] == "CORRECT"
    assert first_a1["contexts"] == first_a1["retrieved"] == [PASSAGE]
    assert first_a1["queries"] == [QUESTIONS[0].question] and first_a1["requeries"] == 0
    assert first_a1["primary_category"] == "地理"
    assert set(first_a1["timings_ms"]) == {"retrieve", "answer", "total"}
    assert set(first_a1["metric_ms"]) == {"grade", "retrieval"}
    assert first_a1["scores"] == {"grader": "rules"}
    assert first_a1["recall"] == {"retrieved": False, "kept": False}
    third_a1 = records[5]
    assert third_a1["id"] == "q3" and third_a1["recall"] == {"retrieved": True, "kept": True}
    assert records[4]["recall"] == {"retrieved": None, "kept": None}  # a0 retrieves nothing
    assert [r["kb_covered"] for r in records[::2]] == [False, False, True, False, False, False]
    run = json.loads((tmp_path / "run" / RUN_FILE).read_text(encoding="utf-8"))["settings"]
    assert run["variants"] == ["a0", "a1"] and run["metrics"] == ["grade", "retrieval"]
    assert run["context"]["model"] == answer_model.name and run["questions"]["n"] == 6
    # the graph's context and the evaluation's own settings are recorded apart
    assert run["evaluation"] == {
        "grader": "rules", "eval_model": None, "eval_base_url": None, "eval_api_model": None,
        "eval_embedder": EvalSettings().eval_embedder,
    }
    assert not set(run["context"]) & set(run["evaluation"])


def test_resume_after_a_crash_redoes_nothing_and_loses_nothing(
    tmp_path: Path, answer_model: Callable, kb: Path
) -> None:
    out = tmp_path / "run"
    answer_model(fail_after=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(out, answer_model.name, kb)
    before = (out / RESULTS_FILE).read_bytes()
    assert len(before.splitlines()) == 5
    healthy = answer_model()
    evaluate(out, answer_model.name, kb)
    assert healthy.calls == 12 - 5  # only the missing pairs ran
    assert (out / RESULTS_FILE).read_bytes().startswith(before)
    assert sorted(pairs(out)) == sorted((q.id, v) for q in QUESTIONS for v in ("a0", "a1"))
    evaluate(out, answer_model.name, kb)  # complete run: nothing to do
    assert healthy.calls == 7 and len(pairs(out)) == 12


def test_truncated_last_line_is_dropped_and_redone(tmp_path: Path, answer_model: Callable, kb: Path) -> None:
    out = tmp_path / "run"
    answer_model(fail_after=3)
    with pytest.raises(RuntimeError):
        evaluate(out, answer_model.name, kb)
    lines = (out / RESULTS_FILE).read_bytes().splitlines(keepends=True)
    (out / RESULTS_FILE).write_bytes(b"".join(lines[:2]) + lines[2][:40])  # killed while writing line 3
    healthy = answer_model()
    evaluate(out, answer_model.name, kb)
    assert healthy.calls == 12 - 2
    assert sorted(pairs(out)) == sorted((q.id, v) for q in QUESTIONS for v in ("a0", "a1"))


def test_damaged_results_file_is_refused(tmp_path: Path, answer_model: Callable, kb: Path) -> None:
    out = tmp_path / "run"
    answer_model()
    evaluate(out, answer_model.name, kb)
    lines = (out / RESULTS_FILE).read_text(encoding="utf-8").splitlines(keepends=True)
    (out / RESULTS_FILE).write_text(lines[0] + "{not json\n" + "".join(lines[1:]), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"results.jsonl:2: not a result record"):
        evaluate(out, answer_model.name, kb)


def test_other_settings_are_refused_unless_forced(tmp_path: Path, answer_model: Callable, kb: Path) -> None:
    out = tmp_path / "run"
    model = answer_model()
    evaluate(out, answer_model.name, kb, data=dataset_info(kb, limit=6))
    old_results = (out / RESULTS_FILE).read_bytes()
    changed = Context(model=answer_model.name, top_k=4)
    with pytest.raises(ConfigError, match=r"other settings \(differs in: context\.top_k\).*--force"):
        evaluate(out, answer_model.name, kb, context=changed, data=dataset_info(kb, limit=6))
    with pytest.raises(ConfigError, match=r"differs in: data\.filters\.limit"):
        evaluate(out, answer_model.name, kb, data=dataset_info(kb, limit=5))
    assert model.calls == 12  # refused before answering anything

    evaluate(out, answer_model.name, kb, context=changed, force=True)
    assert model.calls == 24  # a fresh run, nothing reused
    [backup] = out.glob("replaced-*")
    assert (backup / RESULTS_FILE).read_bytes() == old_results
    assert len(pairs(out)) == 12
    settings = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))["settings"]
    assert settings["context"]["top_k"] == 4


def test_results_without_run_file_are_refused(tmp_path: Path, answer_model: Callable, kb: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / RESULTS_FILE).write_text("", encoding="utf-8")
    answer_model()
    with pytest.raises(ConfigError, match="without run.json"):
        evaluate(out, answer_model.name, kb)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"questions": []}, DatasetError, "no questions"),
        ({"variants": ["a9"]}, ConfigError, "'a9'"),
        ({"metrics": ["bleu"]}, ConfigError, "'bleu'"),
    ],
)
def test_bad_arguments_fail_before_anything_is_written(
    tmp_path: Path, answer_model: Callable, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    model = answer_model()
    arguments: dict[str, Any] = {"variants": ["a0"], "questions": QUESTIONS, "metrics": ["grade"], **kwargs}
    with pytest.raises(error, match=message):
        run_evaluation(
            arguments["variants"], arguments["questions"], tmp_path / "run",
            context=Context(model=answer_model.name), metrics=arguments["metrics"], progress=False,
        )
    assert not (tmp_path / "run").exists() and model.calls == 0


def test_unreachable_judge_endpoint_fails_before_the_run(tmp_path: Path, answer_model: Callable, kb: Path) -> None:
    model = answer_model()
    evaluation = EvalSettings(grader="official", eval_base_url="http://127.0.0.1:9/v1", eval_api_model="judge")
    with pytest.raises(JudgeError, match="unreachable"):
        evaluate(tmp_path / "run", answer_model.name, kb, evaluation=evaluation)
    assert not (tmp_path / "run").exists() and model.calls == 0


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A result record without its wall times (which differ between any two runs)."""
    return {key: value for key, value in record.items() if key not in ("timings_ms", "metric_ms")}


def test_concurrent_run_gives_the_same_records_as_a_sequential_one(
    tmp_path: Path, answer_model: Callable, kb: Path
) -> None:
    model = answer_model()
    evaluate(tmp_path / "seq", answer_model.name, kb)
    evaluate(tmp_path / "par", answer_model.name, kb, concurrency=4)
    assert model.calls == 24
    sequential = {(r["id"], r["variant"]): comparable(r) for r in read_results(tmp_path / "seq" / RESULTS_FILE)}
    concurrent = {(r["id"], r["variant"]): comparable(r) for r in read_results(tmp_path / "par" / RESULTS_FILE)}
    assert len(concurrent) == 12 and concurrent == sequential


def test_concurrent_run_resumes_after_a_crash_without_loss_or_duplicates(
    tmp_path: Path, answer_model: Callable, kb: Path
) -> None:
    out = tmp_path / "run"
    answer_model(fail_after=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(out, answer_model.name, kb, concurrency=3)
    written = pairs(out)
    assert 0 < len(written) <= 5  # one answer per pair: no record without its answer, the finished ones kept
    assert len(set(written)) == len(written)
    healthy = answer_model()
    evaluate(out, answer_model.name, kb, concurrency=3)
    assert healthy.calls == 12 - len(written)
    assert sorted(pairs(out)) == sorted((q.id, v) for q in QUESTIONS for v in ("a0", "a1"))


def test_concurrency_below_one_is_refused(tmp_path: Path, answer_model: Callable, kb: Path) -> None:
    answer_model()
    with pytest.raises(ConfigError, match="concurrency must be >= 1"):
        evaluate(tmp_path / "run", answer_model.name, kb, concurrency=0)


def test_a_run_recorded_before_a_context_field_existed_resumes_at_its_default(
    tmp_path: Path, answer_model: Callable, kb: Path
) -> None:
    out = tmp_path / "run"
    answer_model(fail_after=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(out, answer_model.name, kb)
    run_file = out / RUN_FILE
    recorded = json.loads(run_file.read_text(encoding="utf-8"))
    del recorded["settings"]["context"]["mcp_url"]  # as written by a version without that field
    run_file.write_text(json.dumps(recorded), encoding="utf-8")
    healthy = answer_model()
    evaluate(out, answer_model.name, kb)
    assert healthy.calls == 12 - 5
    with pytest.raises(ConfigError, match=r"differs in: context\.mcp_url"):  # a non-default value is a change
        evaluate(out, answer_model.name, kb, context=Context(model=answer_model.name, mcp_url="http://127.0.0.1:9/mcp"))


def test_a_change_of_evaluation_settings_is_refused_by_name(tmp_path: Path, answer_model: Callable, kb: Path) -> None:
    out = tmp_path / "run"
    model = answer_model()
    evaluate(out, answer_model.name, kb)
    with pytest.raises(ConfigError, match=r"differs in: evaluation\.eval_embedder\)"):
        evaluate(out, answer_model.name, kb, evaluation=EvalSettings(eval_embedder="other-embedder"))
    assert model.calls == 12


def test_a_run_recorded_in_format_1_resumes_with_its_evaluation_settings_read_from_its_context(
    tmp_path: Path, answer_model: Callable, kb: Path
) -> None:
    out = tmp_path / "run"
    answer_model(fail_after=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(out, answer_model.name, kb)
    run_file = out / RUN_FILE
    recorded = json.loads(run_file.read_text(encoding="utf-8"))
    settings = recorded["settings"]
    settings["format"] = 1  # as written before the evaluation settings left the context
    settings["context"].update(settings.pop("evaluation"))
    run_file.write_text(json.dumps(recorded), encoding="utf-8")
    healthy = answer_model()
    evaluate(out, answer_model.name, kb)
    assert healthy.calls == 12 - 5
    settings["context"]["grader"] = "official"  # a format-1 run graded otherwise is another run
    run_file.write_text(json.dumps(recorded), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"differs in: evaluation\.grader\)"):
        evaluate(out, answer_model.name, kb)
