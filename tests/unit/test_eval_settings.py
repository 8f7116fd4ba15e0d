"""The evaluation's own settings (EvalSettings) apart from the graph's run context, and the Context's field docs."""

from __future__ import annotations

import dataclasses

import pytest

from zhrag.errors import ConfigError
from zhrag.evaluation.eval_settings import EvalSettings
from zhrag.graph.context import Context
from zhrag.graph.served import ServedContext


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"grader": "bogus"}, "unknown grader 'bogus': use rules or official"),
        ({"eval_base_url": "http://e/v1"}, "eval_base_url and eval_api_model go together: give both or neither"),
        ({"eval_api_model": "judge"}, "eval_base_url and eval_api_model go together: give both or neither"),
    ],
)
def test_bad_evaluation_settings_are_one_line_config_errors(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}$"):
        EvalSettings(**fields)


def test_the_evaluation_settings_are_not_context_fields() -> None:
    evaluation = {item.name for item in dataclasses.fields(EvalSettings)}
    assert evaluation == {"grader", "eval_model", "eval_base_url", "eval_api_model", "eval_embedder"}
    assert not evaluation & {item.name for item in dataclasses.fields(Context)}
    with pytest.raises(TypeError, match="grader"):
        Context(grader="official")  # type: ignore[call-arg]


@pytest.mark.parametrize("schema", [Context, ServedContext, EvalSettings])
def test_every_setting_is_described(schema: type) -> None:
    undescribed = [item.name for item in dataclasses.fields(schema) if not item.metadata.get("description")]
    assert undescribed == []


def test_the_served_schema_shows_the_contexts_descriptions() -> None:
    described = {item.name: item.metadata["description"] for item in dataclasses.fields(Context)}
    assert {item.name: item.metadata["description"] for item in dataclasses.fields(ServedContext)} == described
