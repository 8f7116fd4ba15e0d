"""The retrieval benchmark: hits, recall@k / MRR, resuming, and the report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from zhrag.errors import ConfigError, DatasetError
from zhrag.evaluation.retrieval_eval import (
    Search,
    SearchConfig,
    ablation,
    document_id,
    first_hit,
    run_retrieval_eval,
    score_requery,
    score_set,
)
from zhrag.evaluation.retrieval_report import write_retrieval_report
from zhrag.evaluation.retrieval_sets import QuerySet, RetrievalQuery, load_query_sets
from zhrag.kb.passage import Passage

KB = {
    "p1": ("九命奇冤", "九命奇冤，清吴沃尧所著的小说。"),
    "p2": ("刺角瓜", "刺角瓜原产于非洲喀拉哈里沙漠。"),
    "p3": ("喀尔巴阡山脉", "最高峰在塔特拉山的格尔拉赫峰。"),
}


def _search(ranking: dict[str, list[str]]):
    """A search returning the KB paragraphs in a fixed order per question (chunk ids ``<doc>#0``)."""

    def search(query: str, top_k: int) -> list[Passage]:
        ids = ranking[query][:top_k]
        return [Passage(id=f"{pid}#0", title=KB[pid][0], text=KB[pid][1], score=1.0 / (n + 1)) for n, pid in enumerate(ids)]

    return search


QUERIES = (
    RetrievalQuery("q1", "《九命奇冤》的作者是谁？", frozenset({"p1"}), "吴沃尧"),
    RetrievalQuery("q2", "刺角瓜原产于哪个大洲？", frozenset({"p2"}), "非洲"),
    RetrievalQuery("q3", "喀尔巴阡山脉的最高峰？", frozenset({"p3"}), "格尔拉赫峰"),
)
RANKING = {
    "《九命奇冤》的作者是谁？": ["p1", "p2", "p3"],  # hit at rank 0
    "刺角瓜原产于哪个大洲？": ["p3", "p1", "p2"],  # hit at rank 2
    "喀尔巴阡山脉的最高峰？": ["p1", "p2"],  # no hit
}


def test_document_id_and_first_hit_by_passage_and_by_answer() -> None:
    assert document_id("drcd-12#3") == "drcd-12"
    assert document_id("a#b#0") == "a#b"
    passages = _search(RANKING)("刺角瓜原产于哪个大洲？", 10)
    assert first_hit(QUERIES[1], passages, "passage") == 2
    assert first_hit(QUERIES[1], passages, "answer") == 2
    assert first_hit(QUERIES[2], passages[1:], "passage") is None


def test_recall_and_mrr_follow_the_first_hits() -> None:
    result = score_set(_search(RANKING), QuerySet("toy", "passage", QUERIES), ks=(1, 3))
    assert result["n"] == 3
    assert result["recall@1"] == pytest.approx(1 / 3)
    assert result["recall@3"] == pytest.approx(2 / 3)
    assert result["mrr"] == pytest.approx((1 + 1 / 3) / 3)
    assert result["latency_ms_p50"] >= 0


def _counted_searches() -> tuple[list[str], Callable[[SearchConfig], Search]]:
    """``make_search`` over :data:`RANKING`, and the list of the configurations it was called for."""
    calls: list[str] = []

    def make_search(config: SearchConfig) -> Search:
        calls.append(config.name)
        return _search(RANKING)

    return calls, make_search


def test_run_saves_each_cell_resumes_and_refuses_other_settings(tmp_path) -> None:
    sets = [QuerySet("toy", "passage", QUERIES)]
    calls, make_search = _counted_searches()
    configs = [SearchConfig("a", mode="sparse"), SearchConfig("b")]
    document = run_retrieval_eval(make_search, sets, configs, tmp_path, settings={"engine": "x"}, progress=False)
    assert calls == ["a", "b"]
    saved = json.loads((tmp_path / "retrieval.json").read_text("utf-8"))
    assert saved["rows"]["a"]["sets"]["toy"]["recall@1"] == pytest.approx(1 / 3)
    assert saved == json.loads(json.dumps(document))
    # resuming with one more row only runs the new row
    run_retrieval_eval(make_search, sets, [*configs, SearchConfig("c")], tmp_path, settings={"engine": "x"}, progress=False)
    assert calls == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="--force"):
        run_retrieval_eval(make_search, sets, configs, tmp_path, settings={"engine": "y"}, progress=False)
    run_retrieval_eval(make_search, sets, configs, tmp_path, settings={"engine": "y"}, force=True, progress=False)
    assert calls[-2:] == ["a", "b"]
    [backup] = tmp_path.glob("replaced-*")  # the replaced run is kept
    assert json.loads((backup / "retrieval.json").read_text("utf-8"))["rows"].keys() == {"a", "b", "c"}
    run = json.loads((tmp_path / "run.json").read_text("utf-8"))
    assert run["settings"]["settings"] == {"engine": "y"} and run["sessions"][-1]["finished"]
    report = write_retrieval_report(document, tmp_path)
    text = report.read_text("utf-8")
    assert "| a | 33.3 | 66.7 | 66.7 | 66.7 |" in text
    assert (tmp_path / "retrieval.png").stat().st_size > 0


def test_a_results_file_saved_before_run_json_existed_is_resumed(tmp_path) -> None:
    sets = [QuerySet("toy", "passage", QUERIES)]
    calls, make_search = _counted_searches()
    run_retrieval_eval(make_search, sets, [SearchConfig("a")], tmp_path, settings={"engine": "x"}, progress=False)
    (tmp_path / "run.json").unlink()  # as an older version left the folder
    run_retrieval_eval(make_search, sets, [SearchConfig("a"), SearchConfig("b")], tmp_path,
                       settings={"engine": "x"}, progress=False)
    assert calls == ["a", "b"]
    assert json.loads((tmp_path / "run.json").read_text("utf-8"))["settings"]["settings"] == {"engine": "x"}
    (tmp_path / "run.json").unlink()
    with pytest.raises(ConfigError, match="holds retrieval.json without run.json"):  # other settings: unknown run
        run_retrieval_eval(make_search, sets, [SearchConfig("a")], tmp_path, settings={"engine": "y"}, progress=False)


def test_unknown_set_is_a_clear_error() -> None:
    with pytest.raises(DatasetError, match="unknown retrieval set 'squad'"):
        load_query_sets(["squad"])


def test_requery_second_round_skips_seen_passages_and_counts_recovered_misses() -> None:
    # first round (top 1) misses q2 and q3; the second round's next unseen passage finds q2's paragraph only
    ranking = {**RANKING, "刺 原产 大洲": ["p3", "p2"], "喀尔巴阡山脉 最高峰": ["p1", "p2"]}
    result = score_requery(_search(ranking), QuerySet("toy", "passage", QUERIES), top_k=1)
    same = result["same query, next unseen passages"]
    assert same["round1_recall"] == pytest.approx(1 / 3)
    # q2: same query → p3 seen, next unseen p1 (miss); q3: p1 seen → p2 (miss)
    assert same["round2_recall"] == pytest.approx(1 / 3) and same["misses_recovered"] == 0
    longest = result["three longest terms, unseen passages"]
    # q2 rewritten to its longest terms → p3 seen, p2 found; q3 → p1 seen, p2 (miss)
    assert longest["round2_recall"] == pytest.approx(2 / 3)
    assert longest["misses_recovered"] == pytest.approx(1 / 2)


def test_ablation_rows_have_one_hybrid_row_per_distinct_weight_and_end_with_the_store_default() -> None:
    rows = ablation((1.0, 0.5, 0.2, 0.5))
    assert [row.name for row in rows] == [
        "BM25 (jieba, cleaned query)",
        "dense (embedder only)",
        "hybrid RRF, equal weights",
        "hybrid RRF, dense weight 0.5",
        "hybrid RRF, dense weight 0.2",
        "+ evidence reranker (default)",
    ]
    assert [row.dense_weight for row in rows[2:5]] == [1.0, 0.5, 0.2]
    assert rows[-1].dense_weight is None and rows[-1].reranker == "evidence"
    tuning = ablation((0.5, 1.0), reranked=True)
    assert [(row.name, row.dense_weight, row.reranker) for row in tuning[4:6]] == [
        ("hybrid RRF, dense weight 0.5 + evidence reranker", 0.5, "evidence"),
        ("hybrid RRF, equal weights + evidence reranker", 1.0, "evidence"),
    ]


def test_rc_train_and_heldout_split_the_pairs_by_paragraph_as_eval_does(shared_kb) -> None:
    from zhrag.evaluation.datasets import load_questions
    from zhrag.rc_pairs import default_rc_source

    if not Path(default_rc_source()).is_file():
        pytest.skip(f"shared reading-comprehension pairs not found at {default_rc_source()}")

    train, heldout, everything = load_query_sets(["rc-train", "rc-heldout", "rc"])
    assert (train.name, heldout.name) == ("rc-train", "rc-heldout")
    assert len(train.queries) + len(heldout.queries) == len(everything.queries)
    train_paragraphs = set().union(*(query.passage_ids for query in train.queries))
    heldout_paragraphs = set().union(*(query.passage_ids for query in heldout.queries))
    assert not train_paragraphs & heldout_paragraphs
    asked_by_eval = {question.id for question in load_questions("rc")}
    assert {query.id for query in heldout.queries} == asked_by_eval
