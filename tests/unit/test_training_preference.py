"""Preference data (``build-data --task preference``) and the offline parts of ``train --method dpo``: pairing of
graded samples, the files, the training-question selection, seeded sampling, CLI checks and the adapter-folder guard.

The samplers here are scripted (they stand for the model's sampled answers): they test the pairing and writing, not
what a model answers. Questions are made up for the tests, never benchmark questions.
"""

from __future__ import annotations

import json

import pytest

from zhrag.cli import main
from zhrag.errors import ConfigError, TrainingDataError
from zhrag.evaluation.datasets import load_questions
from zhrag.prompts import build_answer_prompt
from zhrag.training import card as cards
from zhrag.training.dpo import DpoSettings, dpo_run_settings, pairs_sha256, trl_rows
from zhrag.training.lora import LoraSettings, TrainSettings
from zhrag.training.preference import (
    Draw,
    PromptItem,
    build_preference_pairs,
    choose_pair,
    closed_book_items,
    load_preference_pairs,
    training_questions,
    write_preference_splits,
)

from tiny_models import tiny_llama_dir


def item(answers=("东方",), question="太阳从哪个方向升起？", id_="q1") -> PromptItem:
    prompt = build_answer_prompt(question, [], chat=False)
    return PromptItem(id_, "closed_book", question, tuple(answers), ({"from": "human", "value": prompt},), prompt)


@pytest.mark.parametrize(
    ("samples", "outcome", "chosen", "rejected"),
    [
        (["东方", "西方", "东方", "南方", "南方", "南方"], "chosen_correct", "东方", "南方"),  # most frequent of each
        (["西方", "北方", "不知道"], "chosen_unknown", "不知道", "西方"),  # no correct sample: chosen 不知道
        (["东方", "东方"], "all_correct", None, None),
        (["东方", "不知道"], "correct_or_refused", None, None),
        (["不知道", "抱歉，我不清楚"], "all_refused", None, None),
    ],
)
def test_pairs_choose_a_correct_answer_or_unknown_over_a_wrong_one(samples, outcome, chosen, rejected):
    pair, got = choose_pair(item(), samples)
    assert got == outcome
    if chosen is None:
        assert pair is None
        return
    assert pair["chosen"] == {"from": "gpt", "value": chosen}
    assert pair["rejected"] == {"from": "gpt", "value": rejected}
    assert pair["conversations"] == [dict(turn) for turn in item().turns]
    assert pair["meta"]["grades"][samples.index(rejected)] == "INCORRECT"


def test_any_gold_answer_counts_as_correct():
    pair, outcome = choose_pair(item(answers=("日出之地", "东方")), ["东方", "西方"])
    assert outcome == "chosen_correct" and pair["chosen"]["value"] == "东方"


def scripted(answers_by_question):
    """A sampler answering each prompt from a script; records the seeds and counts it was asked with."""
    calls = []

    def sample(prompts, n, seed):
        calls.append((len(prompts), n, seed))
        return [next(v for k, v in answers_by_question.items() if k in prompt)[:n] for prompt in prompts]

    return sample, calls


def test_build_counts_every_outcome_and_splits_by_seed():
    questions = [f"第{i}号灯塔建于哪一年？" for i in range(40)]
    items = [item(answers=("1900年",), question=q, id_=f"q{i}") for i, q in enumerate(questions)]
    script = {q: (["1900年", "1800年"] if i % 4 == 0 else ["1700年", "1700年"] if i % 4 == 1 else
                  ["1900年", "1900年"] if i % 4 == 2 else ["不知道", "不知道"]) for i, q in enumerate(questions)}
    sample, calls = scripted(script)
    splits = build_preference_pairs(items, sample, samples=2, seed=7, eval_fraction=0.25, batch=16)
    assert calls == [(16, 2, 7), (16, 2, 7), (8, 2, 7)]
    manifest = splits.manifest
    assert manifest["pairs"] == 20 and manifest["prompts"] == 40
    assert manifest["chosen"] == {"chosen_correct": 10, "chosen_unknown": 10}
    assert manifest["skipped"] == {"all_correct": 10, "correct_or_refused": 0, "all_refused": 10}
    assert len(splits.train) + len(splits.eval) == 20 and splits.eval and splits.train
    again = build_preference_pairs(items, scripted(script)[0], samples=2, seed=7, eval_fraction=0.25)
    assert [p["id"] for p in again.eval] == [p["id"] for p in splits.eval]


def test_build_refuses_too_few_samples_and_no_pair():
    sample, _ = scripted({"太阳": ["东方", "东方"]})
    with pytest.raises(ConfigError, match="--samples must be >= 2"):
        build_preference_pairs([item()], sample, samples=1)
    with pytest.raises(TrainingDataError, match="no preference pair"):
        build_preference_pairs([item()], sample, samples=2)


@pytest.mark.parametrize("data_format", ["sharegpt", "alpaca"])
def test_files_are_llama_factory_preference_data_and_read_back(tmp_path, data_format):
    sample, _ = scripted({"一周有几天": ["五天", "六天"], "太阳从哪个方向": ["西方", "东方"]})
    items = [item(), item(answers=("七天",), question="一周有几天？", id_="q2")]
    splits = build_preference_pairs(items, sample, samples=2, eval_fraction=0.0)
    written = write_preference_splits(splits, tmp_path, format=data_format, name="pref", extra={"model": "m"})
    info = json.loads(written["dataset_info"].read_text(encoding="utf-8"))
    assert set(info) == {"pref_train"} and info["pref_train"]["ranking"] is True
    assert info["pref_train"]["columns"]["chosen"] == "chosen" and info["pref_train"]["formatting"] == data_format
    row = json.loads(written["train"].read_text(encoding="utf-8").splitlines()[0])
    if data_format == "alpaca":
        assert row["chosen"] == "东方" and row["rejected"] == "西方" and "output" not in row
        assert row["instruction"] == items[0].prompt
    else:
        assert row["chosen"] == {"from": "gpt", "value": "东方"}
    manifest = json.loads(written["manifest"].read_text(encoding="utf-8"))
    assert manifest["format"] == data_format and manifest["model"] == "m" and manifest["pairs"] == 2
    assert manifest["chosen"] == {"chosen_correct": 1, "chosen_unknown": 1}
    path, pairs = load_preference_pairs(tmp_path)
    assert path == written["train"]
    assert [(p.id, p.chosen, p.rejected) for p in pairs] == [("q1", "东方", "西方"), ("q2", "不知道", "五天")]
    assert pairs[0].turns[-1] == {"from": "human", "value": items[0].prompt}


def test_a_folder_without_ranking_data_is_refused(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"x_train": {"file_name": "x.jsonl"}}), encoding="utf-8")
    with pytest.raises(TrainingDataError, match='expected one \\*_train dataset with "ranking": true'):
        load_preference_pairs(tmp_path)
    (tmp_path / "rows.jsonl").write_text('{"conversations": [{"from": "human", "value": "问"}]}\n', encoding="utf-8")
    with pytest.raises(TrainingDataError, match="rows.jsonl:1: a preference row needs chosen and rejected"):
        load_preference_pairs(tmp_path / "rows.jsonl")


def test_training_questions_leave_out_every_evaluation_draw(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"id": f"id{i}", "question": f"问题{i}？", "answer": str(i)} for i in range(800)]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    draws = (Draw(120, 0), Draw(40, 1, 120, 0))
    kept, excluded = training_questions(path, draws=draws, exclude_first=100)
    drawn = {q.id for q in load_questions(path, sample=120, seed=0)}
    drawn |= {q.id for q in load_questions(path, sample=40, seed=1, exclude_sample=120, exclude_seed=0)}
    kept_ids = {q.id for q in kept}
    assert not kept_ids & drawn and not kept_ids & {f"id{i}" for i in range(100)}
    assert len(kept) + excluded == 800 and excluded == len(drawn | {f"id{i}" for i in range(100)})
    prompts = closed_book_items(kept[:1], chat=False)
    assert prompts[0].prompt == build_answer_prompt(kept[0].question, [], chat=False)
    assert prompts[0].answers == (kept[0].answer,) and prompts[0].kind == "closed_book"


def test_trl_rows_follow_the_model_form():
    from zhrag.training.preference import PreferencePair

    pair = PreferencePair("q1", item().turns, "东方", "西方")
    assert trl_rows([pair], chat=False) == [{"prompt": item().prompt, "chosen": "东方", "rejected": "西方"}]
    chat_pair = PreferencePair("q2", ({"from": "system", "value": "简短回答"}, {"from": "human", "value": "问"}), "甲", "乙")
    assert trl_rows([chat_pair], chat=True) == [{
        "prompt": [{"role": "system", "content": "简短回答"}, {"role": "user", "content": "问"}],
        "chosen": [{"role": "assistant", "content": "甲"}], "rejected": [{"role": "assistant", "content": "乙"}],
    }]
    with pytest.raises(TrainingDataError, match="has a chat prompt"):
        trl_rows([chat_pair], chat=False)
    assert pairs_sha256([pair]) != pairs_sha256([chat_pair])


def test_a_dpo_adapter_is_another_adapter_than_sft_or_other_dpo_settings(tmp_path):
    from zhrag.training.preference import PreferencePair

    pairs = [PreferencePair("q1", item().turns, "东方", "西方")]
    settings = dpo_run_settings(pairs, {"name": "m"}, LoraSettings(output_tokens=()), TrainSettings(), DpoSettings())
    cards.claim_output_dir(tmp_path, settings, force=False)  # empty: fine
    (tmp_path / "training_card.json").write_text(json.dumps({"settings": {**settings, "method": "sft"}}), encoding="utf-8")
    (tmp_path / "rewards.png").write_bytes(b"png")
    cards.claim_output_dir(tmp_path, {**settings, "method": "sft"}, force=False)  # the same adapter: resumable
    with pytest.raises(ConfigError, match="trained with other settings \\(method\\)"):
        cards.claim_output_dir(tmp_path, settings, force=False)
    cards.claim_output_dir(tmp_path, settings, force=True)
    assert not (tmp_path / "training_card.json").exists() and not (tmp_path / "rewards.png").exists()
    assert len(list(tmp_path.glob("replaced-*/rewards.png"))) == 1
    with pytest.raises(ConfigError, match="DPO beta must be > 0"):
        DpoSettings(beta=0).check()


def test_sampling_is_seeded_and_greedy_stays_the_default(tmp_path):
    from zhrag.models import load_llm

    llm = load_llm(str(tiny_llama_dir(tmp_path / "tiny")), device="cpu", engine="transformers")
    prompt = "问题：中国的首都是哪里？\n答案："
    first = llm.generate_samples([prompt, prompt], 3, temperature=1.5, seed=11, max_new_tokens=6, stop=())
    again = llm.generate_samples([prompt], 3, temperature=1.5, seed=11, max_new_tokens=6, stop=())
    assert first[0] == first[1] == again[0] and len(first[0]) == 3
    others = [llm.generate_samples([prompt], 3, temperature=1.5, seed=seed, max_new_tokens=6, stop=())[0]
              for seed in range(5)]
    assert len({tuple(texts) for texts in others}) > 1  # the seed changes the samples
    assert llm.generate([prompt], max_new_tokens=6, stop=()) == llm.generate([prompt], max_new_tokens=6, stop=())
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        llm.generate_samples([prompt], 2, temperature=0, seed=0)


def test_engines_without_sampling_say_so():
    from langchain_core.language_models.fake import FakeListLLM

    from zhrag.models import LocalLLM

    llm = LocalLLM.from_langchain(FakeListLLM(responses=["东方"]))
    with pytest.raises(ConfigError, match="does not sample answers"):
        llm.generate_samples(["问"], 2, temperature=1.0, seed=0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["build-data", "--task", "preference", "--samples", "1"], "--samples must be >= 2"),
        (["build-data", "--task", "preference", "--temperature", "0"], "--temperature must be > 0, got 0.0"),
        (["build-data", "--task", "preference", "--format", "csv"], "unknown --format 'csv'"),
        (["train", "--task", "answer", "--method", "ppo", "--data", "d"], "unknown --method 'ppo'; use one of ['sft', 'dpo']"),
        (["train", "--task", "judge", "--method", "dpo", "--data", "d"], "--method dpo trains the answer node"),
        (["train", "--task", "answer", "--method", "dpo", "--data", "/nonexistent/p"], "preference data not found"),
    ],
)
def test_bad_preference_input_gives_one_line_error(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_llamacpp_samples_ask_each_seed_at_the_temperature():
    from zhrag.models.llamacpp import LlamaCppLLM

    class Runtime:
        """Stands in for llama.cpp: records the request bodies, answers with the seed."""

        def __init__(self) -> None:
            self.bodies: list[dict] = []

        def map(self, bodies):
            self.bodies += bodies
            return [{"text": f"答{body['seed']}\n多余"} for body in bodies]

    model = LlamaCppLLM.__new__(LlamaCppLLM)  # no model file: the runtime stands in for llama.cpp
    runtime = Runtime()
    model.runtime, model.is_chat, model.load_info = runtime, False, {"model": "stand-in"}
    assert model.generate_samples(["问甲", "问乙"], 2, temperature=0.8, seed=5) == [["答5", "答6"], ["答5", "答6"]]
    assert [(b["prompt"], b["seed"], b["temperature"]) for b in runtime.bodies] == [
        ("问甲", 5, 0.8), ("问甲", 6, 0.8), ("问乙", 5, 0.8), ("问乙", 6, 0.8)]
