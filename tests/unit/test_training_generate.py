"""Self-generated pairs (zhrag.training.generate, zhrag.prompts.generate) with a scripted model: parsing, every
rejection reason, the sidecar, resuming (also after a kill mid-write) and conversion to reading-comprehension pairs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from zhrag.errors import ConfigError, TrainingDataError
from zhrag.prompts.generate import (
    CHECK_EXAMPLES,
    CHECK_QUESTION,
    GENERATE_EXAMPLES,
    build_check_prompt,
    build_generate_prompt,
    parse_pairs,
)
from zhrag.rc_pairs import load_rc_pairs
from zhrag.training.examples import (
    LexicalRetriever,
    build_rc_examples,
    load_documents,
)
from zhrag.training.generate import (
    GenerationSettings,
    generate_dataset,
    generated_rc_pairs,
    load_generated,
    longest_common_substring,
    meta_path,
    rule_check,
    select_passages,
    write_rc_pairs,
)
from zhrag.training.review import append_decision

# Invented passages (no benchmark text); each is one chunk of 100 to 500 characters.
_PASSAGES = {
    "good": ("青溪镇", ("青溪镇位于云岭省东部，始建于明朝万历年间，以出产竹编工艺品闻名，每年秋季举办竹编节，吸引各地游客前来参观。"
             "镇上有一座石拱桥，名叫望月桥，建于清朝乾隆年间，全长四十二米，是当地最古老的建筑之一。")),
    "absent": ("白鹭湖", ("白鹭湖是一座人工湖，湖面面积约十二平方公里，湖心岛上建有观鸟塔，每年冬天都有大批候鸟在此停留过冬。"
               "湖的东岸有一座水文站，由水利工程师郑怀山设计，于一九七九年建成并投入使用，至今仍在运行。")),
    "copied": ("林慕远", ("林慕远是一位化学家，生于海宁，一九五八年首次合成了化合物蓝晶酮，后来担任东岳大学校长长达十二年之久。"
               "他的学生遍布全国各地，其中最有名的是物理学家程远舟，曾获得国家自然科学一等奖，主持过多项重大研究。")),
    "junk": ("远山谣", ("《远山谣》是作曲家沈书禾创作的一部交响诗，一九八七年在上海首演，全曲分为四个乐章，描写山村四季的景色。"
             "首演由东岳交响乐团担任，指挥是韩秋白，此后这部作品在国内外演出超过三百场，成为沈书禾最知名的作品。")),
    "dup": ("望月桥", ("望月桥是青溪镇的一座石拱桥，建于清朝乾隆年间，全长四十二米，桥面由青石铺成，两侧栏杆刻有花鸟图案。"
            "当地人每逢中秋节都会在桥上赏月，因此得名望月桥，如今它已被列为省级文物保护单位，每天有许多游客来访。")),
    "denied": ("丁县", ("丁县位于乙省北部，县城叫作石门镇，全县人口约三十万，以种植小麦和玉米为主，近年来发展了果品加工产业。"
               "县内有一条河流叫清水河，发源于北部山区，全长八十六公里，向南流入丙河，沿岸建有多座小型水电站。")),
    "inquestion": ("程远舟", ("程远舟是一位物理学家，毕业于东岳大学，师从化学家林慕远，后来转向凝聚态物理研究，发表论文两百余篇。"
                   "他曾担任北辰研究所所长十年，退休后回到故乡海宁定居，并把个人藏书全部捐给了当地的图书馆，共计八千余册。")),
    "long": ("韩秋白", ("韩秋白是一位指挥家，曾担任东岳交响乐团首席指挥二十年，指挥过交响诗《远山谣》的首演，以严谨细致著称。"
             "他早年在北辰音乐学院学习小提琴，后来改学指挥，一生指挥过的音乐会超过一千场，晚年出版了回忆录。")),
}

PASSAGES = {key: (title, text + "以上内容纯属虚构。") for key, (title, text) in _PASSAGES.items()}

# passage key -> the model's completion (completion form, starting inside the first question).
GENERATIONS = {
    "good": "望月桥是在哪个朝代建成的？\n答案：清朝",
    "absent": "白鹭湖的水文站由谁设计？\n答案：王大明",
    "copied": "林慕远是一位化学家，生于海宁，一九五八年首次合成了什么化合物？\n答案：蓝晶酮",
    "junk": "这段资料讲的是什么呢",
    "dup": "望月桥是在哪个朝代建成的？\n答案：清朝",
    "denied": "丁县的县城叫什么名字？\n答案：石门镇",
    "inquestion": "程远舟的老师林慕远是做什么的？\n答案：林慕远",
    "long": "韩秋白是做什么的？\n答案：曾担任东岳交响乐团首席指挥二十年并且指挥过交响诗《远山谣》的首演以严谨细致著称",
}
EXPECTED_REASON = {
    "good": None,
    "absent": "answer_not_in_passage",
    "copied": "question_copies_passage",
    "junk": "unparsable",
    "dup": "duplicate_question",
    "denied": "llm_check_no",
    "inquestion": "answer_in_question",
    "long": "answer_too_long",
}


class ScriptedLLM:
    """A LocalLLM stand-in: ``reply(prompt text)`` gives each completion; every call is recorded."""

    def __init__(self, reply: Callable[[str], str], *, is_chat: bool = False) -> None:
        self.reply = reply
        self.is_chat = is_chat
        self.load_info = {"model": "scripted", "kind": "langchain", "source": "ScriptedLLM", "adapter": None}
        self.calls: list[tuple[list[Any], int, tuple[str, ...]]] = []

    def generate(self, prompts: Sequence[Any], max_new_tokens: int = 32, stop: Sequence[str] = ("\n",)) -> list[str]:
        self.calls.append((list(prompts), max_new_tokens, tuple(stop)))
        return [self.reply(_text(prompt)) for prompt in prompts]

    def generated_passages(self) -> list[str]:
        """The passage keys the generation prompts were about, in order."""
        return [_key_of(_text(p)) for prompts, _, _ in self.calls for p in prompts if CHECK_QUESTION not in _text(p)]


def _text(prompt: str | list[BaseMessage]) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(str(m.content) for m in prompt)


def _key_of(prompt: str) -> str:
    """The passage key of the last passage in a prompt (the few-shot examples come first)."""
    last = prompt.rsplit("资料：", 1)[1]
    return next(key for key, (_, text) in PASSAGES.items() if text[:20] in last)


def scripted_reply(prompt: str) -> str:
    if CHECK_QUESTION in prompt and not prompt.rstrip().endswith("问题："):
        return "否" if _key_of(prompt) == "denied" else "是"
    return GENERATIONS[_key_of(prompt)]


@pytest.fixture
def kb(tmp_path: Path) -> Path:
    path = tmp_path / "kb.jsonl"
    rows = [{"id": key, "title": title, "text": text} for key, (title, text) in PASSAGES.items()]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def records_by_passage(path: Path) -> dict[str, dict[str, Any]]:
    return {r["passage_id"]: r for r in load_generated(path)}


# ---------------------------------------------------------------- prompts and parsing


def test_completion_prompt_shows_examples_then_ends_inside_the_question() -> None:
    prompt = build_generate_prompt("【甲城】甲城位于乙省北部。", chat=False, n_pairs=2)
    assert isinstance(prompt, str)
    assert prompt.endswith("资料：【甲城】甲城位于乙省北部。\n问题：")
    for passage, pairs in GENERATE_EXAMPLES:
        block = prompt.split(f"资料：{passage}\n", 1)[1].split("\n\n", 1)[0]
        assert block.count("问题：") == 2 and block.count("答案：") == 2
        assert f"问题：{pairs[0][0]}\n答案：{pairs[0][1]}" in block


def test_chat_prompt_asks_for_n_pairs_in_the_line_format() -> None:
    prompt = build_generate_prompt("【甲城】甲城位于乙省北部。", chat=True, n_pairs=3)
    assert [type(m) for m in prompt] == [SystemMessage, HumanMessage]
    assert "问题：" in prompt[0].content and "答案：" in prompt[0].content
    assert "甲城位于乙省北部" in prompt[1].content and "3个问答对" in prompt[1].content


def test_check_prompt_ends_with_the_pair_and_the_question() -> None:
    prompt = build_check_prompt("【甲城】甲城位于乙省北部。", "甲城在乙省哪里？", "北部", chat=False)
    assert prompt.endswith(f"资料：【甲城】甲城位于乙省北部。\n问题：甲城在乙省哪里？\n答案：北部\n{CHECK_QUESTION}")
    assert [v for *_, v in CHECK_EXAMPLES].count("是") == [v for *_, v in CHECK_EXAMPLES].count("否")
    chat = build_check_prompt("资料", "问题", "答案", chat=True)
    assert isinstance(chat[0], SystemMessage) and chat[1].content.endswith(CHECK_QUESTION)


def test_the_few_shot_pairs_obey_the_rules_they_teach() -> None:
    settings = GenerationSettings()
    for passage, pairs in GENERATE_EXAMPLES:
        for question, answer in pairs:
            assert rule_check(question, answer, passage, settings) is None, (question, answer)
    for passage, question, answer, verdict in CHECK_EXAMPLES:
        if verdict == "是":
            assert rule_check(question, answer, passage, settings) is None, (question, answer)


@pytest.mark.parametrize(
    ("text", "completion", "expected"),
    [
        ("甲城在哪个省？\n答案：乙省\n\n", True, [("甲城在哪个省？", "乙省")]),
        ("甲城在哪个省？\n答案：乙省\n问题：丙河有多长？\n答案：三百公里。", True,
         [("甲城在哪个省？", "乙省"), ("丙河有多长？", "三百公里")]),
        ("问题1：甲城在哪个省？\n答案1：**乙省**\n问题2：丙河有多长？\n答案2：三百公里", False,
         [("甲城在哪个省？", "乙省"), ("丙河有多长？", "三百公里")]),
        ("好的，以下是问答对：\n问题：甲城在哪个省？\n\n答案：乙省，位于北部", False, [("甲城在哪个省？", "乙省")]),
        ("这段资料讲的是什么呢", True, []),
        ("甲城在哪个省？\n答案：", True, []),
        ("\n答案：乙省", True, []),
    ],
)
def test_parse_pairs(text: str, completion: bool, expected: list[tuple[str, str]]) -> None:
    assert parse_pairs(text, completion=completion) == expected


# ---------------------------------------------------------------- rule checks


@pytest.mark.parametrize(
    ("question", "answer", "reason"),
    [
        ("甲城位于哪个省？", "乙省", None),
        ("甲城位于哪个省？", "ＡＢＣ省", None),  # full-width letters normalise (NFKC, lower case)
        ("", "乙省", "unparsable"),
        ("甲城位于哪个省？", "", "unparsable"),
        ("甲城位于哪个省？", "乙省北部的一座历史悠久的古城，始建于明朝，城内有许多古老的建筑和寺庙", "answer_too_long"),
        ("甲城位于哪个省？", "丁省", "answer_not_in_passage"),
        ("乙省的甲城在哪个方向？", "乙省", "answer_in_question"),
        ("甲城是abc省北部的一座历史悠久的古城吗？", "明朝", "question_copies_passage"),
    ],
)
def test_rule_check_reasons(question: str, answer: str, reason: str | None) -> None:
    passage = "【甲城】甲城是ABC省北部的一座历史悠久的古城，始建于明朝。乙省与它相邻。"
    assert rule_check(question, answer, passage, GenerationSettings(max_answer_chars=20)) == reason


def test_copy_span_threshold_is_inclusive() -> None:
    passage = "甲乙丙丁戊己庚辛壬癸子丑寅卯"
    question = "甲乙丙丁戊己是什么？"  # shares 6 characters
    assert rule_check(question, "子丑", passage, GenerationSettings(copy_span_chars=7)) is None
    assert rule_check(question, "子丑", passage, GenerationSettings(copy_span_chars=6)) == "question_copies_passage"


@pytest.mark.parametrize(("a", "b", "length"), [("", "abc", 0), ("abc", "xyz", 0), ("xabcy", "zzabczz", 3), ("aaaa", "aa", 2)])
def test_longest_common_substring(a: str, b: str, length: int) -> None:
    assert longest_common_substring(a, b) == length


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="per-passage"):
        GenerationSettings(per_passage=0)
    with pytest.raises(ConfigError, match="copy-span-chars"):
        GenerationSettings(copy_span_chars=0)


# ---------------------------------------------------------------- a whole run


def test_every_pair_is_kept_with_its_status_and_reason(kb: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    llm = ScriptedLLM(scripted_reply)
    report = generate_dataset(llm, out, kb=kb, settings=GenerationSettings(batch_size=3), progress=False)

    by_passage = records_by_passage(out)
    assert set(by_passage) == set(PASSAGES)
    # The duplicate is the second of the two identical questions in the seeded order.
    order = [r["passage_id"] for r in load_generated(out)]
    first, second = sorted(("good", "dup"), key=order.index)
    expected = {**EXPECTED_REASON, first: None, second: "duplicate_question"}
    assert {key: r["reason"] for key, r in by_passage.items()} == expected
    for key, record in by_passage.items():
        assert record["status"] == ("accepted" if expected[key] is None else "rejected")
        assert record["chunk_id"] == f"{key}#0" and record["id"] == f"{key}#0/1"
        assert PASSAGES[key][1][:100] in record["passage"]
        assert record["passage_records"] == 1
        assert record["generation"] == GENERATIONS[key]
    # Only pairs that passed the rules were sent to the LLM check.
    checked = {key for key, r in by_passage.items() if r["llm_check"] is not None}
    assert checked == {"good", "dup", "denied"}
    assert report.processed == len(PASSAGES) and report.statuses == {"accepted": 1, "rejected": 7}
    assert report.reasons["llm_check_no"] == 1 and report.reasons["unparsable"] == 1


def test_sidecar_records_model_prompts_settings_and_counts(kb: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    generate_dataset(ScriptedLLM(scripted_reply), out, kb=kb, limit=5, settings=GenerationSettings(seed=3), progress=False)
    meta = json.loads(meta_path(out).read_text(encoding="utf-8"))
    assert meta_path(out).name == "gen.jsonl.meta.json"
    assert meta["model"]["model"] == "scripted" and meta["model"]["is_chat"] is False
    for name in ("generate", "check"):
        prompt = meta["prompts"][name]
        assert prompt["sha256"] == hashlib.sha256(prompt["text"].encode("utf-8")).hexdigest()
    assert meta["prompts"]["generate"]["text"].endswith("资料：{passage}\n问题：")
    assert "问题：{question}\n答案：{answer}" in meta["prompts"]["check"]["text"]
    assert meta["settings"]["seed"] == 3 and meta["settings"]["limit"] == 5
    assert meta["settings"]["kb"] == str(kb.resolve())
    assert meta["counts"]["passages"] == 5 and sum(meta["counts"]["status"].values()) == 5


def test_without_llm_check_the_check_prompt_is_neither_sent_nor_recorded(kb: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    llm = ScriptedLLM(scripted_reply)
    generate_dataset(llm, out, kb=kb, settings=GenerationSettings(llm_check=False), progress=False)
    assert all(CHECK_QUESTION not in _text(p) for prompts, _, _ in llm.calls for p in prompts)
    assert records_by_passage(out)["denied"]["status"] == "accepted"
    assert json.loads(meta_path(out).read_text(encoding="utf-8"))["prompts"]["check"] is None


def test_several_pairs_per_passage_get_their_own_lines(kb: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    two = "望月桥是在哪个朝代建成的？\n答案：清朝\n问题：望月桥全长多少米？\n答案：四十二米\n问题：多余的问题？\n答案：清朝"
    llm = ScriptedLLM(lambda p: "是" if p.endswith(CHECK_QUESTION) else two)
    generate_dataset(llm, out, kb=kb, limit=1, settings=GenerationSettings(per_passage=2), progress=False)
    records = load_generated(out)
    assert [r["id"].rsplit("/", 1)[1] for r in records] == ["1", "2"]
    assert all(r["passage_records"] == 2 for r in records)
    assert llm.calls[0][1] == 80  # the budget grows with the pairs asked for


def test_chat_models_get_messages_and_their_replies_are_parsed(kb: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"

    def reply(prompt: str) -> str:
        if prompt.endswith(CHECK_QUESTION):
            return "是"
        return "问题：望月桥是在哪个朝代建成的？\n答案：清朝" if _key_of(prompt) == "dup" else "没有问题"

    llm = ScriptedLLM(reply, is_chat=True)
    generate_dataset(llm, out, kb=kb, settings=GenerationSettings(llm_check=True), progress=False)
    assert all(isinstance(p, list) for prompts, _, _ in llm.calls for p in prompts)
    assert all(stop == () for _, _, stop in llm.calls[:1])
    by_passage = records_by_passage(out)
    assert by_passage["dup"]["status"] == "accepted"
    assert {r["reason"] for key, r in by_passage.items() if key != "dup"} == {"unparsable"}


# ---------------------------------------------------------------- resuming


def test_rerun_skips_done_passages_and_a_larger_limit_continues(kb: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    first = ScriptedLLM(scripted_reply)
    generate_dataset(first, out, kb=kb, limit=3, progress=False)
    again = ScriptedLLM(scripted_reply)
    report = generate_dataset(again, out, kb=kb, limit=3, progress=False)
    assert again.calls == [] and report.processed == 0 and report.already_done == 3

    more = ScriptedLLM(scripted_reply)
    generate_dataset(more, out, kb=kb, limit=6, progress=False)
    done_first = first.generated_passages()
    assert len(more.generated_passages()) == 3 and not set(more.generated_passages()) & set(done_first)
    assert len(load_generated(out)) == 6
    assert [p["id"] for p in select_passages(kb, limit=6)] == [r["chunk_id"] for r in load_generated(out)]


def test_a_kill_mid_write_is_repaired_and_the_passage_redone(kb: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    generate_dataset(ScriptedLLM(scripted_reply), out, kb=kb, limit=2, progress=False)
    complete = out.read_bytes()
    lines = complete.decode("utf-8").splitlines(keepends=True)
    # A 2-pair passage of which only the first line made it, then half a line.
    group = json.loads(lines[-1])
    partial = {**group, "id": "望月桥#9/1", "chunk_id": "望月桥#9", "passage_records": 2}
    out.write_bytes(complete + (json.dumps(partial, ensure_ascii=False) + "\n").encode() + b'{"id": "half')
    llm = ScriptedLLM(scripted_reply)
    report = generate_dataset(llm, out, kb=kb, limit=3, progress=False)
    assert report.processed == 1
    records = load_generated(out)
    assert len(records) == 3 and "望月桥#9" not in {r["chunk_id"] for r in records}
    assert out.read_bytes().startswith(complete)


def test_another_model_or_setting_is_refused_unless_forced(kb: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    generate_dataset(ScriptedLLM(scripted_reply), out, kb=kb, limit=2, progress=False)
    with pytest.raises(ConfigError, match="other copy_span_chars setting"):
        generate_dataset(ScriptedLLM(scripted_reply), out, kb=kb, limit=2,
                         settings=GenerationSettings(copy_span_chars=8), progress=False)
    other = ScriptedLLM(scripted_reply)
    other.load_info = {**other.load_info, "model": "another"}
    with pytest.raises(ConfigError, match="other model"):
        generate_dataset(other, out, kb=kb, limit=2, progress=False)
    append_decision(tmp_path / "gen.decisions.jsonl", {"id": load_generated(out)[0]["id"], "decision": "rejected"})
    old_pairs = out.read_bytes()
    report = generate_dataset(other, out, kb=kb, limit=1, force=True, progress=False)
    assert report.processed == 1 and len(load_generated(out)) == 1
    [replaced] = tmp_path.glob("gen.replaced-*.jsonl")  # the old run is moved aside with its sidecar, not deleted
    assert replaced.read_bytes() == old_pairs and meta_path(replaced).is_file()
    assert not (tmp_path / "gen.decisions.jsonl").exists()
    assert len(list(tmp_path.glob("gen.decisions.replaced-*.jsonl"))) == 1
    assert json.loads(meta_path(out).read_text(encoding="utf-8"))["model"]["model"] == "another"


def test_a_file_without_sidecar_is_not_overwritten(kb: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    out.write_text('{"something": "else"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="without gen.jsonl.meta.json"):
        generate_dataset(ScriptedLLM(scripted_reply), out, kb=kb, progress=False)
    assert out.read_text(encoding="utf-8") == '{"something": "else"}\n'


def test_a_damaged_file_names_the_line(kb: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    generate_dataset(ScriptedLLM(scripted_reply), out, kb=kb, limit=1, progress=False)
    out.write_text(out.read_text(encoding="utf-8") + '{"id": 3}\n', encoding="utf-8")
    with pytest.raises(TrainingDataError, match=r"gen.jsonl:2: field 'id'"):
        generate_dataset(ScriptedLLM(scripted_reply), out, kb=kb, limit=3, progress=False)


# ---------------------------------------------------------------- to training examples


def test_accepted_pairs_become_rc_pairs_and_answer_examples(kb: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    generate_dataset(ScriptedLLM(scripted_reply), out, kb=kb, progress=False)
    accepted = [r for r in load_generated(out) if r["status"] == "accepted"]
    pairs = generated_rc_pairs(out)
    assert [p.id for p in pairs] == [f"gen:{r['id']}" for r in accepted]
    assert all(p.source == "generated" and p.answers == ("清朝",) for p in pairs)

    documents = load_documents(kb)
    splits = build_rc_examples(pairs, documents, LexicalRetriever.from_documents(documents.values()), chat=False,
                               eval_fraction=0)
    answers = [e for e in splits.train if e["task"] == "answer"]
    assert len(answers) == len(pairs) and not splits.skipped
    assert answers[0]["conversations"][-1] == {"from": "gpt", "value": "清朝"}
    assert answers[0]["meta"]["source"] == "rc:generated"

    rc_file = write_rc_pairs(pairs, tmp_path / "rc.jsonl")
    assert load_rc_pairs(rc_file) == pairs


def test_review_decisions_override_the_generator(kb: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    generate_dataset(ScriptedLLM(scripted_reply), out, kb=kb, progress=False)
    by_passage = records_by_passage(out)
    accepted = next(r for r in by_passage.values() if r["status"] == "accepted")
    decisions = tmp_path / "gen.decisions.jsonl"
    append_decision(decisions, {"id": accepted["id"], "decision": "rejected"})
    append_decision(decisions, {"id": by_passage["absent"]["id"], "decision": "edited",
                                "question": "白鹭湖的水文站由谁设计？", "answer": "郑怀山"})
    append_decision(decisions, {"id": by_passage["denied"]["id"], "decision": "accepted"})
    pairs = generated_rc_pairs(out, decisions)
    assert {(p.passage_id, p.answers[0]) for p in pairs} == {("absent", "郑怀山"), ("denied", "石门镇")}
