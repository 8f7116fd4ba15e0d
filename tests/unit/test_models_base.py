"""What the engines share (zhrag.models.base): OpenAI-style log-probabilities read into scores, and the defaults of
a model that gives no probabilities."""

from __future__ import annotations

import math

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from zhrag.errors import ConfigError
from zhrag.models import LocalLLM
from zhrag.models.base import candidate_probabilities, scored_from_logprobs


def test_scored_text_is_cut_at_the_stop_and_keeps_every_token() -> None:
    entries = [{"token": "北", "logprob": math.log(0.5)}, {"token": "京", "logprob": math.log(0.5)},
               {"token": "\n", "logprob": math.log(0.1)}]
    scored = scored_from_logprobs("北京\n下一题", entries, ["\n"])
    assert scored.text == "北京" and scored.tokens == ("北", "京", "\n")
    assert scored.confidence() == pytest.approx(0.5)  # the newline after the answer does not count


def test_a_reply_without_logprobs_has_no_confidence() -> None:
    assert scored_from_logprobs("北京", [], ["\n"]).confidence() is None


def test_candidate_probabilities_sum_the_first_token_alternatives_of_each_candidate() -> None:
    entries = [{"token": "是", "logprob": math.log(0.6), "top_logprobs": [
        {"token": "是", "logprob": math.log(0.6)}, {"token": " 是", "logprob": math.log(0.1)},
        {"token": "否", "logprob": math.log(0.2)}, {"token": "不", "logprob": math.log(0.05)}]},
        {"token": "的", "logprob": 0.0, "top_logprobs": [{"token": "否", "logprob": 0.0}]}]
    probabilities = candidate_probabilities(entries, ["是", "否", "对"])
    assert probabilities == pytest.approx({"是": 0.7, "否": 0.2, "对": 0.0})
    assert candidate_probabilities([], ["是", "否"]) == {"是": 0.0, "否": 0.0}


def test_a_model_without_probabilities_refuses_scored_calls_by_name() -> None:
    llm = LocalLLM.from_langchain(FakeListChatModel(responses=["x"]))
    assert not llm.supports_logprobs and (llm.batch_size, llm.default_concurrency) == (1, 1)
    with pytest.raises(ConfigError, match="FakeListChatModel gives no token probabilities"):
        llm.generate_scored(["问题"])
    with pytest.raises(ConfigError, match="FakeListChatModel gives no token probabilities"):
        llm.next_token_probabilities(["问题"], ["是", "否"])
