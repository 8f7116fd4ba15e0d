"""Fine-tuning examples: the graph's own prompts, gold placement, distractors, balance and held-out splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from zhrag import settings
from zhrag.errors import TrainingDataError
from zhrag.evaluation.datasets import Question
from zhrag.evaluation.retrieval_metrics import kb_covered
from zhrag.kb.passage import Passage
from zhrag.kb.sources import Document
from zhrag.prompts import build_answer_prompt, build_judge_prompt, normalize_text
from zhrag.rc_pairs import RCPair, default_rc_source, load_rc_pairs
from zhrag.training.examples import (
    Example,
    LexicalRetriever,
    build_qa_examples,
    build_rc_examples,
    document_passages,
    load_documents,
)

# Invented paragraphs; d7 is lexically close to the 蓝晶酮 question but names its answer, so it is no distractor.
DOCUMENTS = {
    doc.id: doc
    for doc in (
        Document("d1", "青溪镇", "青溪镇位于云岭省东部，以出产竹编工艺品闻名，每年秋季举办竹编节。", "test"),
        Document("d2", "白鹭湖", "白鹭湖是一座人工湖，湖面面积约十二平方公里，湖心岛上建有观鸟塔。", "test"),
        Document("d3", "林慕远", "化学家林慕远生于海宁，1958年首次合成了化合物蓝晶酮，后任东岳大学校长。", "test"),
        Document(
            "d4", "远山谣", "《远山谣》是作曲家沈书禾创作的一部交响诗，1987年在上海首演，全曲分为四个乐章。", "test"
        ),
        Document("d5", "竹编节", "竹编节是青溪镇的传统节日，始于清代，节日期间镇上举行竹编比赛。", "test"),
        Document(
            "d6", "东岳大学", "东岳大学是一所综合性大学，位于东岳市，设有化学系和音乐学院，首次招生于1958年。", "test"
        ),
        Document("d7", "纪念馆", "林慕远纪念馆位于海宁，馆内陈列化学家首次合成蓝晶酮的实验记录。", "test"),
        Document("d8", "白鹭湖公园", "白鹭湖公园在白鹭湖西岸，园内有通往湖心岛的码头和游船。", "test"),
    )
}
PAIRS = [
    RCPair("p1", "demo", "青溪镇以出产什么闻名？", ("竹编工艺品",), "d1"),
    RCPair("p2", "demo", "蓝晶酮是由哪位化学家首次合成的？", ("林慕远",), "d3"),
    RCPair("p3", "demo", "交响诗《远山谣》是在哪一年首演的？", ("1987年", "1987"), "d4"),
    RCPair("p4", "demo", "白鹭湖的湖心岛上建有什么？", ("观鸟塔",), "d2"),
]
PASSAGES = {p["id"]: p for doc in DOCUMENTS.values() for p in document_passages(doc)}


def human_and_target(example: Example) -> tuple[str, str]:
    *prompt_turns, target = example["conversations"]
    assert target["from"] == "gpt"
    return prompt_turns[-1]["value"], target["value"]


def by_id(examples: list[Example]) -> dict[str, Example]:
    return {example["id"]: example for example in examples}


@pytest.fixture(scope="module")
def retriever() -> LexicalRetriever:
    return LexicalRetriever.from_documents(DOCUMENTS.values())


def test_lexical_retriever_ranks_by_shared_bigrams(retriever: LexicalRetriever) -> None:
    ranked = retriever("青溪镇的竹编节", 3)
    assert [p["id"] for p in ranked[:2]] == ["d5#0", "d1#0"]  # d5 shares 竹编节 and 青溪镇, d1 only 青溪镇 + 竹编
    assert ranked[0]["score"] > ranked[1]["score"] > 0
    assert retriever("完全无关的词语", 3) == []


def test_rc_answer_examples_use_the_answer_prompt_with_the_gold_passage_among_distractors(
    retriever: LexicalRetriever,
) -> None:
    splits = build_rc_examples(PAIRS, DOCUMENTS, retriever, chat=False, eval_fraction=0)
    examples = by_id(splits.train)
    assert splits.eval == [] and not splits.skipped
    for pair in PAIRS:
        example = examples[f"{pair.id}/answer"]
        meta = example["meta"]
        passages = [PASSAGES[i] for i in meta["passage_ids"]]
        assert example["task"] == "answer" and meta["question_id"] == pair.id and meta["split"] == "train"
        assert human_and_target(example) == (build_answer_prompt(pair.question, passages, chat=False), pair.answers[0])
        assert meta["passage_ids"][meta["gold_position"] - 1] == f"{pair.passage_id}#0"
        distractors = [p for p in passages if not p["id"].startswith(f"{pair.passage_id}#")]
        assert len(distractors) == len(passages) - 1 >= 1
        for distractor in distractors:
            text = normalize_text(distractor["title"] + distractor["text"])
            assert not any(normalize_text(answer) in text for answer in pair.answers)
    assert "d7#0" not in examples["p2/answer"]["meta"]["passage_ids"]  # names 林慕远, though lexically close


def test_rc_judge_examples_are_balanced_yes_on_gold_no_on_a_distractor(retriever: LexicalRetriever) -> None:
    splits = build_rc_examples(PAIRS, DOCUMENTS, retriever, chat=False, eval_fraction=0)
    judges = [e for e in splits.train if e["task"] == "judge"]
    assert Counter(human_and_target(e)[1] for e in judges) == {"是": len(PAIRS), "否": len(PAIRS)}
    pairs = {pair.id: pair for pair in PAIRS}
    for example in judges:
        pair, judged = pairs[example["meta"]["question_id"]], PASSAGES[example["meta"]["judged_passage_id"]]
        prompt, verdict = human_and_target(example)
        assert prompt == build_judge_prompt(pair.question, judged, chat=False)
        assert (verdict == "是") == (judged["id"] == f"{pair.passage_id}#0") == example["meta"]["relevant"]


def test_chat_examples_carry_the_nodes_system_and_user_messages(retriever: LexicalRetriever) -> None:
    splits = build_rc_examples(PAIRS[:1], DOCUMENTS, retriever, chat=True, eval_fraction=0)
    examples = by_id(splits.train)
    assert [turn["from"] for turn in examples["p1/judge/yes"]["conversations"]] == ["system", "human", "gpt"]
    answer = examples["p1/answer"]
    assert [turn["from"] for turn in answer["conversations"]] == ["system", "human", "gpt"]
    passages = [PASSAGES[i] for i in answer["meta"]["passage_ids"]]
    messages = build_answer_prompt(PAIRS[0].question, passages, chat=True)
    assert [turn["value"] for turn in answer["conversations"][:-1]] == [m.content for m in messages]


def test_rc_pairs_that_cannot_be_used_are_counted_not_dropped_silently(retriever: LexicalRetriever) -> None:
    broken = [
        RCPair("x1", "demo", "某地在哪里？", ("某处",), "not-in-kb"),
        RCPair("x2", "demo", "", ("观鸟塔",), "d2"),
        RCPair("x3", "demo", "白鹭湖有多大？", ("三百平方公里",), "d2"),  # not in its paragraph
    ]
    splits = build_rc_examples([*PAIRS, *broken], DOCUMENTS, retriever, chat=False, eval_fraction=0)
    assert splits.skipped == {"passage_not_in_kb": 1, "empty_question_or_answer": 1, "answer_not_visible": 1}
    assert {e["meta"]["question_id"] for e in splits.train} == {pair.id for pair in PAIRS}


def test_rc_output_does_not_depend_on_input_order(retriever: LexicalRetriever) -> None:
    forward = build_rc_examples(PAIRS, DOCUMENTS, retriever, chat=False, eval_fraction=0.25, seed=3)
    backward = build_rc_examples(PAIRS[::-1], DOCUMENTS, retriever, chat=False, eval_fraction=0.25, seed=3)
    assert forward.eval_groups == backward.eval_groups and len(forward.eval_groups) == 1
    assert by_id(forward.train) == by_id(backward.train) and by_id(forward.eval) == by_id(backward.eval)


@pytest.fixture(scope="module")
def shared_rc() -> tuple[list[RCPair], dict[str, Document]]:
    """The first 600 real reading-comprehension pairs and the KB paragraphs they were written on."""
    path = default_rc_source()
    if not path.is_file() or not settings.default_kb_source().is_file():
        pytest.skip(f"shared reading-comprehension pairs or KB not found ({path})")
    pairs = load_rc_pairs(path)[:600]
    documents = load_documents()
    return pairs, {p.passage_id: documents[p.passage_id] for p in pairs if p.passage_id in documents}


def test_real_pairs_hold_out_whole_passages_deterministically(
    shared_rc: tuple[list[RCPair], dict[str, Document]],
) -> None:
    pairs, documents = shared_rc
    retriever = LexicalRetriever.from_documents(documents.values())
    splits = build_rc_examples(pairs, documents, retriever, chat=False, seed=0)
    train_passages = {e["meta"]["passage_id"] for e in splits.train}
    eval_passages = {e["meta"]["passage_id"] for e in splits.eval}
    assert eval_passages == set(splits.eval_groups) and not train_passages & eval_passages
    assert len(splits.eval_groups) == round(0.05 * len(documents))
    assert {e["meta"]["split"] for e in splits.eval} == {"eval"}
    answers = [e for e in splits.train + splits.eval if e["task"] == "answer"]
    assert {e["meta"]["gold_position"] for e in answers} == {1, 2, 3}
    unusable = sum(count for reason, count in splits.skipped.items() if reason != "judge_without_distractor")
    assert len(answers) + unusable == len(pairs)

    again = build_rc_examples(pairs, documents, retriever, chat=False, seed=0)
    assert again.train == splits.train and again.eval == splits.eval
    other_seed = build_rc_examples(pairs, documents, retriever, chat=False, seed=1)
    assert other_seed.eval_groups != splits.eval_groups


def test_load_rc_pairs_names_file_and_line_of_bad_rows(tmp_path: Path) -> None:
    good = {"id": "a", "question": "问？", "answers": ["答"], "passage_id": "d1"}
    path = tmp_path / "rc.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "answers": "答"}) + "\n", encoding="utf-8")
    with pytest.raises(TrainingDataError, match=rf"{path}:2: field 'answers'"):
        load_rc_pairs(path)
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(good) + "\n", encoding="utf-8")
    with pytest.raises(TrainingDataError, match=rf"{path}:3: duplicate id 'a'"):
        load_rc_pairs(path)
    with pytest.raises(TrainingDataError, match="cannot be read"):
        load_rc_pairs(tmp_path / "missing.jsonl")


QUESTIONS = [
    Question("q0", "青溪镇以出产什么闻名？", "竹编工艺品"),
    Question("q1", "蓝晶酮是由哪位化学家首次合成的？", "林慕远"),
    Question("q2", "交响诗《远山谣》是在哪一年首演的？", "一九八七年"),
    Question("q3", "白鹭湖湖心岛上的塔是谁设计的？", "王小塔"),
]


def test_qa_examples_label_judges_by_the_relevance_rule_and_balance_them(retriever: LexicalRetriever) -> None:
    splits = build_qa_examples(QUESTIONS, retriever, relevant=kb_covered, chat=False, exclude_first=1, eval_fraction=0)
    assert splits.excluded_ids == ["q0"]
    examples = splits.train
    assert "q0" not in {e["meta"]["question_id"] for e in examples}
    questions = {q.id: q for q in QUESTIONS}
    judges = [e for e in examples if e["task"] == "judge"]
    for example in judges:
        question = questions[example["meta"]["question_id"]]
        passage = PASSAGES[example["meta"]["judged_passage_id"]]
        prompt, verdict = human_and_target(example)
        assert prompt == build_judge_prompt(question.question, passage, chat=False)
        assert (
            (verdict == "是")
            == kb_covered(question.question, question.answer, [passage])
            == example["meta"]["relevant"]
        )
    labels = Counter(kb_covered(q.question, q.answer, [p]) for q in QUESTIONS[1:] for p in retriever(q.question, 3))
    smaller = min(labels.values())
    assert smaller >= 2 and labels[True] != labels[False]  # the data needs balancing
    assert Counter(human_and_target(e)[1] for e in judges) == {"是": smaller, "否": smaller}
    assert splits.skipped["judge_balancing"] == labels.total() - 2 * smaller

    answers = {e["meta"]["question_id"]: e for e in examples if e["task"] == "answer"}
    assert set(answers) == {"q1", "q2"} and splits.skipped["answer_not_in_passages"] == 1  # q3's answer is nowhere
    passages = [PASSAGES[i] for i in answers["q2"]["meta"]["passage_ids"]]
    assert human_and_target(answers["q2"]) == (
        build_answer_prompt(QUESTIONS[2].question, passages, chat=False),
        "一九八七年",
    )


def test_qa_ungrounded_answers_can_be_kept_and_dev_ids_excluded(retriever: LexicalRetriever) -> None:
    splits = build_qa_examples(
        QUESTIONS,
        retriever,
        relevant=kb_covered,
        chat=True,
        exclude_first=0,
        exclude_ids=["q1"],
        require_grounded=False,
        eval_fraction=0.3,
    )
    assert splits.excluded_ids == ["q1"]
    answers = {e["meta"]["question_id"]: e for e in splits.train + splits.eval if e["task"] == "answer"}
    assert set(answers) == {"q0", "q2", "q3"} and answers["q3"]["meta"]["grounded"] is False
    assert len(splits.eval_groups) == 1 and {e["meta"]["question_id"] for e in splits.eval} <= set(splits.eval_groups)


def test_bad_arguments_are_training_data_errors(retriever: LexicalRetriever) -> None:
    with pytest.raises(TrainingDataError, match="eval fraction"):
        build_rc_examples(PAIRS, DOCUMENTS, retriever, chat=False, eval_fraction=1.0)
    with pytest.raises(TrainingDataError, match="n_passages"):
        build_qa_examples(QUESTIONS, retriever, relevant=kb_covered, chat=False, n_passages=0)


def test_retriever_passages_are_returned_as_passage_dicts(retriever: LexicalRetriever) -> None:
    [best] = retriever("白鹭湖", 1)
    assert best == Passage(
        id="d2#0", title="白鹭湖", text=DOCUMENTS["d2"].text, score=best["score"], evidence=best["evidence"]
    )
    # the evidence window is the passage sentence that matches the query, as the store's reranker sets it
    assert best["evidence"] and best["evidence"] in DOCUMENTS["d2"].text and "白鹭湖" in best["evidence"]
