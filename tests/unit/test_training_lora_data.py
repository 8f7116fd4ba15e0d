"""Training inputs and outputs without a model: data selection, bad data, the output guard, the card, build-data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

from zhrag.cli import main
from zhrag.errors import ConfigError, TrainingDataError
from zhrag.evaluation.datasets import Question
from zhrag.evaluation.retrieval_metrics import kb_covered
from zhrag.training.build import build_qa_data, build_rc_data, select_task
from zhrag.training.card import (
    CARD_FILE,
    CHECKPOINTS_DIR,
    LOSS_PLOT_FILE,
    claim_output_dir,
    examples_sha256,
    loss_curve,
    render_readme,
    settings_differences,
    write_loss_plot,
    write_run,
)
from zhrag.training.dataset import load_training_data
from zhrag.training.examples import Example, ExampleSplits
from zhrag.training.formats import export_examples, import_examples, write_splits

pytest.importorskip("datasets", reason="the optional 'datasets' package (zhrag[train]) reads and writes training files")

KB = [
    {"id": "d1", "title": "青溪镇", "text": "青溪镇位于云岭省东部，以出产竹编工艺品闻名，每年秋季举办竹编节。"},
    {"id": "d2", "title": "白鹭湖", "text": "白鹭湖是一座人工湖，湖面面积约十二平方公里，湖心岛上建有观鸟塔。"},
    {"id": "d3", "title": "林慕远", "text": "化学家林慕远生于海宁，1958年首次合成了化合物蓝晶酮，后任东岳大学校长。"},
    {"id": "d4", "title": "远山谣", "text": "《远山谣》是作曲家沈书禾创作的一部交响诗，1987年在上海首演，全曲分为四个乐章。"},
    {"id": "d5", "title": "竹编节", "text": "竹编节是青溪镇的传统节日，始于清代，节日期间镇上举行竹编比赛。"},
]
PAIRS = [
    {"id": "p1", "source": "demo", "question": "青溪镇以出产什么闻名？", "answers": ["竹编工艺品"], "passage_id": "d1"},
    {"id": "p2", "source": "demo", "question": "蓝晶酮是由哪位化学家首次合成的？", "answers": ["林慕远"], "passage_id": "d3"},
    {"id": "p3", "source": "demo", "question": "《远山谣》是在哪一年首演的？", "answers": ["1987年"], "passage_id": "d4"},
    {"id": "p4", "source": "demo", "question": "白鹭湖的湖心岛上建有什么？", "answers": ["观鸟塔"], "passage_id": "d2"},
]


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def example(index: int, task: str = "answer", answer: str = "北京") -> Example:
    return Example(
        id=f"e{index}",
        task=task,
        conversations=[{"from": "human", "value": f"问题{index}：中国的首都是哪里？\n答案："}, {"from": "gpt", "value": answer}],
        meta={"n": index},
    )


EXAMPLES = [example(0), example(1, "judge", "是"), example(2), example(3), example(4, "judge", "否"), example(5)]


# ---------------------------------------------------------------------------------------------- training data


def test_training_data_keeps_the_task_and_samples_reproducibly(tmp_path: Path) -> None:
    path = export_examples(EXAMPLES, tmp_path / "train.jsonl")
    data = load_training_data(path, "answer")
    assert [e["id"] for e in data.examples] == ["e0", "e2", "e3", "e5"]
    assert data.path == path and data.sha256 == examples_sha256(data.examples)
    sample = load_training_data(path, "answer", limit=2, seed=1)
    assert len(sample.examples) == 2
    assert [e["id"] for e in sample.examples] == sorted(e["id"] for e in sample.examples)  # file order kept
    assert load_training_data(path, "answer", limit=2, seed=1) == sample
    assert sample.sha256 != data.sha256
    alpaca = export_examples(EXAMPLES, tmp_path / "train.json", format="alpaca")
    assert load_training_data(alpaca, "judge").sha256 == load_training_data(path, "judge").sha256


def test_a_build_data_folder_gives_its_training_split(tmp_path: Path) -> None:
    write_splits(ExampleSplits(train=EXAMPLES[:4], eval=EXAMPLES[4:]), tmp_path / "data", name="mine")
    data = load_training_data(tmp_path / "data", "answer")
    assert data.path == tmp_path / "data" / "mine_train.jsonl"
    assert [e["id"] for e in data.examples] == ["e0", "e2", "e3"]
    write_splits(ExampleSplits(train=EXAMPLES[:2]), tmp_path / "data", name="other")
    with pytest.raises(TrainingDataError, match=r"expected exactly one '\*_train' dataset.*mine_train.*other_train"):
        load_training_data(tmp_path / "data", "answer")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"text": "no known columns"}], r"bad\.jsonl:1: unknown data format"),
        (
            [{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
             {"conversations": [{"from": "human", "value": "only a question"}]}],
            r"bad\.jsonl:2: conversation has no gpt \(assistant\) or function_call turn",
        ),
        ([{"instruction": "q", "output": ""}], r"bad\.jsonl:1: Alpaca row needs a non-empty 'instruction'"),
    ],
)
def test_bad_data_names_file_and_line(tmp_path: Path, rows: list[dict], message: str) -> None:
    with pytest.raises(TrainingDataError, match=message):
        load_training_data(jsonl(tmp_path / "bad.jsonl", rows), "answer")


def test_missing_data_wrong_task_and_bad_suffix_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="training data not found: .*nothing.jsonl"):
        load_training_data(tmp_path / "nothing.jsonl", "answer")
    path = export_examples(EXAMPLES[:1], tmp_path / "answers.jsonl")
    with pytest.raises(TrainingDataError, match=r"answers\.jsonl: no 'judge' examples \(the file holds answer"):
        load_training_data(path, "judge")
    with pytest.raises(ConfigError, match="unknown task 'rewrite'"):
        load_training_data(path, "rewrite")
    (tmp_path / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(TrainingDataError, match="unknown file type '.csv'"):
        load_training_data(tmp_path / "data.csv", "answer")


# ---------------------------------------------------------------------------------------------- card and out dir

SETTINGS = {"task": "answer", "data_sha256": "abc", "lora": {"rank": 16, "alpha": 32}, "limit": None}


def test_settings_differences_name_the_changed_fields() -> None:
    assert settings_differences(SETTINGS, dict(SETTINGS)) == []
    changed = {**SETTINGS, "data_sha256": "def", "lora": {"rank": 8, "alpha": 32}, "limit": 4}
    assert settings_differences(SETTINGS, changed) == ["data_sha256", "limit", "lora.rank"]


def test_examples_hash_covers_turns_not_metadata() -> None:
    assert examples_sha256(EXAMPLES) == examples_sha256([{**e, "meta": {}} for e in EXAMPLES])
    assert examples_sha256(EXAMPLES) != examples_sha256([*EXAMPLES[:-1], example(5, answer="上海")])
    assert examples_sha256(EXAMPLES) != examples_sha256(list(reversed(EXAMPLES)))


def test_output_dir_guard(tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    claim_output_dir(out, SETTINGS, force=False)  # missing: fine
    write_run(out, SETTINGS)
    claim_output_dir(out, SETTINGS, force=False)  # the same run's checkpoints: resume
    with pytest.raises(ConfigError, match=r"holds checkpoints of a run trained with other settings \(task\)"):
        claim_output_dir(out, {**SETTINGS, "task": "judge"}, force=False)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "adapter_config.json").write_text("{}", encoding="utf-8")
    (foreign / "adapter_model.safetensors").write_bytes(b"x")
    (foreign / "notes.txt").write_text("keep", encoding="utf-8")
    (foreign / CHECKPOINTS_DIR / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(ConfigError, match="holds an adapter without a training card.*--force"):
        claim_output_dir(foreign, SETTINGS, force=False)
    assert (foreign / "adapter_model.safetensors").exists()
    claim_output_dir(foreign, SETTINGS, force=True)
    [backup] = foreign.glob("replaced-*")  # moved aside, not deleted
    assert sorted(path.name for path in foreign.iterdir() if path != backup) == ["notes.txt"]
    assert (backup / "adapter_model.safetensors").read_bytes() == b"x"
    assert (backup / CHECKPOINTS_DIR / "checkpoint-3").is_dir()

    stray = tmp_path / "stray"
    (stray / CHECKPOINTS_DIR / "checkpoint-1").mkdir(parents=True)
    with pytest.raises(ConfigError, match="holds checkpoints without checkpoints/run.json"):
        claim_output_dir(stray, SETTINGS, force=False)
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="is a file"):
        claim_output_dir(tmp_path / "file", SETTINGS, force=True)

    (out / CARD_FILE).write_text(json.dumps({"settings": SETTINGS}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"holds an adapter trained with other settings \(limit\)"):
        claim_output_dir(out, {**SETTINGS, "limit": 3}, force=False)


def test_loss_curve_plot_and_readme(tmp_path: Path) -> None:
    history = [
        {"loss": 2.5, "grad_norm": 1.0, "learning_rate": 1e-4, "epoch": 0.5, "step": 1},
        {"loss": 1.5, "grad_norm": 1.0, "learning_rate": 5e-5, "epoch": 1.0, "step": 2},
        {"train_runtime": 3.0, "train_loss": 2.0, "epoch": 1.0, "step": 2},
    ]
    curve = loss_curve(history)
    assert curve == [(1, 2.5), (2, 1.5)]
    assert write_loss_plot([], tmp_path / "empty.png", title="t") is None
    plot = write_loss_plot(curve, tmp_path / LOSS_PLOT_FILE, title="LoRA answer adapter")
    assert plot.read_bytes()[:4] == b"\x89PNG"
    card = {
        "task": "judge",
        "base_model": {"model": "gemma3-270m", "kind": "packaged", "name_or_path": "/cache/gemma"},
        "data": {"path": "d.jsonl", "trained_examples": 4, "sha256": "0" * 64, "skipped_too_long": 1},
        "result": {"global_step": 2, "epochs": 1.0, "final_loss": 1.5, "wall_s": 12.0, "seconds_per_example": 1.5},
        "device": {"type": "cpu", "dtype": "float32", "world_size": 1},
        "hyperparameters": {"lora_rank": 16, "learning_rate": 2e-4},
        "files": {"loss_plot": LOSS_PLOT_FILE},
    }
    readme = render_readme(card)
    for text in ("--judge-adapter", "gemma3-270m", "| final loss | 1.5 |", "lora_rank=16", "![training loss]"):
        assert text in readme


# ---------------------------------------------------------------------------------------------- build-data


@pytest.fixture
def sources(tmp_path: Path) -> tuple[Path, Path]:
    return jsonl(tmp_path / "kb.jsonl", KB), jsonl(tmp_path / "rc.jsonl", PAIRS)


def test_rc_data_for_one_task_or_both(sources: tuple[Path, Path]) -> None:
    kb, rc = sources
    both = build_rc_data("both", source=rc, kb=kb, chat=False, seed=0)
    answer = build_rc_data("answer", source=rc, kb=kb, chat=False, seed=0)
    tasks = {e["task"] for e in both.train + both.eval}
    assert tasks == {"answer", "judge"}
    assert answer.train == [e for e in both.train if e["task"] == "answer"]
    assert answer.eval == [e for e in both.eval if e["task"] == "answer"]
    assert answer.eval_groups == both.eval_groups and len(answer.eval_groups) == 1
    sample = build_rc_data("answer", source=rc, kb=kb, chat=False, limit=2, seed=0)
    assert len(sample.train) + len(sample.eval) == 2
    with pytest.raises(ConfigError, match="unknown task 'rewrite'"):
        build_rc_data("rewrite", source=rc, kb=kb, chat=False)
    assert select_task(both, "both") is both


def test_qa_data_keeps_the_evaluation_slice_out(sources: tuple[Path, Path]) -> None:
    kb, _ = sources
    questions = [Question(p["id"], p["question"], p["answers"][0]) for p in PAIRS]
    splits = build_qa_data("answer", questions, relevant=kb_covered, kb=kb, chat=False, exclude_first=1, limit=2)
    assert splits.excluded_ids == ["p1"]
    used = {e["meta"]["question_id"] for e in splits.train + splits.eval}
    assert "p1" not in used and 1 <= len(used) <= 2
    assert all(e["task"] == "answer" for e in splits.train + splits.eval)


def chat_model_dir(path: Path) -> Path:
    """A folder with a config and a word-level tokenizer that has a chat template (enough for build-data)."""
    vocab = {token: index for index, token in enumerate(["<unk>", "<s>", "</s>", "a"])}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tokenizer.save_pretrained(path)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    return path


def test_build_data_cli_writes_splits_in_the_model_prompt_form(sources, tmp_path: Path, capsys) -> None:
    kb, rc = sources
    model = chat_model_dir(tmp_path / "chat-model")
    argv = ["build-data", "--task", "judge", "--source", f"rc:{rc}", "--kb", str(kb), "--model", str(model)]
    assert main([*argv, "--out", str(tmp_path / "out"), "--format", "alpaca"]) == 0
    assert "chat prompts" in capsys.readouterr().out
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == ["dataset_info.json", "zhrag_eval.jsonl", "zhrag_manifest.json", "zhrag_train.jsonl"]
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text(encoding="utf-8"))
    assert info["zhrag_train"]["formatting"] == "alpaca"
    examples = import_examples(tmp_path / "out" / "zhrag_train.jsonl")
    assert examples and {e["task"] for e in examples} == {"judge"}
    assert all(e["conversations"][0]["from"] == "system" for e in examples)  # chat messages: a system turn first


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--task", "answer", "--data", "/nonexistent/train.jsonl", "--out", "x"], "training data not found"),
        (["train", "--task", "rewrite", "--data", "/nonexistent", "--out", "x"], "unknown task 'rewrite'"),
        (["train", "--task", "answer", "--data", "d", "--out", "x", "--rank", "0"], "LoRA rank must be >= 1"),
        (["build-data", "--out", "x", "--source", "/nonexistent/qa.jsonl", "--model", "/nonexistent/m"], "model path"),
    ],
)
def test_cli_training_input_errors_are_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
