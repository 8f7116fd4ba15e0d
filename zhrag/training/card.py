"""The training card of an adapter directory, the guard against overwriting another adapter, and the loss curve.

An adapter directory written by ``zhrag train`` holds the PEFT files, ``training_card.json`` (what was
trained on what, with which settings, and the result), a ``README.md`` rendering of the card, the loss
curve ``loss.png``, and ``checkpoints/`` with ``run.json`` (the settings of the run the checkpoints belong
to, and per session of training its times, code commit and load average: see :mod:`zhrag.run_folder`). The
card's ``settings`` decide whether a directory holds "the same" adapter: the task, the data hash, the base model's
identity, the LoRA and optimiser settings. Epochs, step limits and logging/saving intervals are the ``schedule``:
changing them continues the same adapter. ``--force`` moves another adapter's files into ``replaced-<time>/``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zhrag.errors import ConfigError, ZhragError
from zhrag.models.hf_runtime import TRAINING_CARD_FILE
from zhrag.run_folder import RUN_FILE, back_up, settings_differences, start_run
from zhrag.run_folder import read_run as read_run_file
from zhrag.training.examples import Example

CARD_FILE = TRAINING_CARD_FILE
README_FILE = "README.md"
LOSS_PLOT_FILE = "loss.png"
#: Reward margin and accuracy curves of a preference (DPO) adapter.
REWARDS_PLOT_FILE = "rewards.png"
CHECKPOINTS_DIR = "checkpoints"
#: Files of a PEFT adapter directory (``save_pretrained``).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
#: Version of the card layout.
CARD_VERSION = 1


def examples_sha256(examples: Sequence[Example]) -> str:
    """SHA-256 of the examples as trained on (ids, tasks and turns, in order; metadata ignored)."""
    digest = hashlib.sha256()
    for example in examples:
        record = [example["id"], example["task"], [[t["from"], t["value"]] for t in example["conversations"]]]
        digest.update(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def read_card(out: Path) -> dict[str, Any] | None:
    """The training card in ``out``, or ``None`` when there is none.

    Raises:
        ConfigError: the card exists but is not a JSON object.
    """
    return read_json_object(out / CARD_FILE)


def read_run(out: Path) -> dict[str, Any] | None:
    """The ``checkpoints/run.json`` record of an interrupted or finished run in ``out``, or ``None``."""
    return read_run_file(out / CHECKPOINTS_DIR)


def write_run(out: Path, settings: Mapping[str, Any]) -> Path:
    """Record the settings the checkpoints of ``out`` belong to (before the first checkpoint is written), and a new
    training session (start time, code commit, load average) in ``checkpoints/run.json``; returns that file."""
    record = read_run(out)
    same = record is not None and record.get("settings") == json.loads(json.dumps(settings))
    return start_run(out / CHECKPOINTS_DIR, settings, (), resume=same, what="checkpoints folder")


def claim_output_dir(out: Path, settings: Mapping[str, Any], *, force: bool) -> None:
    """Make sure ``out`` may receive the adapter of ``settings``; with ``force``, clear what stands in the way.

    ``out`` may be missing or empty, or hold this same adapter (card or checkpoints with equal settings).
    Anything else — a card or checkpoints of other settings, or PEFT files / checkpoints with no record —
    is another adapter: refused unless ``force``, in which case the adapter files, card, README, loss plot
    and checkpoints are moved into ``out/replaced-<time>/`` (:func:`zhrag.run_folder.back_up`; other files are
    left alone).

    Raises:
        ConfigError: ``out`` is a file, or holds another adapter and ``force`` is false.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} is a file, not a directory")
    problem = _conflict(out, settings)
    if problem is None:
        return
    if not force:
        raise ConfigError(f"{out} {problem}; pass --force to replace it, or choose another --out")
    back_up(out, (*ADAPTER_FILES, CARD_FILE, README_FILE, LOSS_PLOT_FILE, REWARDS_PLOT_FILE, CHECKPOINTS_DIR))


def _conflict(out: Path, settings: Mapping[str, Any]) -> str | None:
    """Why ``out`` holds another adapter than the one of ``settings``, or ``None`` when it does not."""
    card, run = read_card(out), read_run(out)
    for record, what in ((card, "holds an adapter"), (run, "holds checkpoints of a run")):
        if record is not None:
            differences = settings_differences(record.get("settings") or {}, settings)
            if differences:
                return f"{what} trained with other settings ({', '.join(differences)})"
    has_adapter = any((out / name).is_file() for name in ADAPTER_FILES)
    has_checkpoints = any((out / CHECKPOINTS_DIR).glob("checkpoint-*"))
    if has_adapter and card is None and run is None:
        return "holds an adapter without a training card (not written by zhrag train)"
    if has_checkpoints and run is None:
        return f"holds checkpoints without {CHECKPOINTS_DIR}/{RUN_FILE}"
    return None


def loss_curve(log_history: Sequence[Mapping[str, Any]]) -> list[tuple[int, float]]:
    """``(step, loss)`` of the training-loss entries of a Trainer's ``log_history``."""
    return [(int(entry["step"]), float(entry["loss"])) for entry in log_history if "loss" in entry and "step" in entry]


def metric_curve(log_history: Sequence[Mapping[str, Any]], key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of the training-log entries of a Trainer's ``log_history`` that hold ``key`` (eval entries,
    whose keys start with ``eval_``, are other keys)."""
    return [(int(entry["step"]), float(entry[key])) for entry in log_history if key in entry and "step" in entry]


def write_curves_plot(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path, *, title: str) -> Path | None:
    """Draw each named curve (step, value) in its own panel of one PNG; ``None`` when no curve has points."""
    shown = {name: curve for name, curve in curves.items() if curve}
    if not shown:
        return None
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 2.6 * len(shown)), layout="constrained")
    panels = figure.subplots(len(shown), 1, squeeze=False)[:, 0]
    for axes, (name, curve) in zip(panels, shown.items(), strict=True):
        steps, values = zip(*curve, strict=True)
        axes.plot(steps, values, marker="o" if len(curve) < 30 else None, color="tab:green")
        axes.set(xlabel="optimiser step", ylabel=name)
        axes.grid(alpha=0.3)
    panels[0].set_title(title)
    figure.savefig(path, dpi=120)
    return path


def write_loss_plot(curve: Sequence[tuple[int, float]], path: Path, *, title: str) -> Path | None:
    """Draw the training loss against the optimiser step as a PNG (matplotlib, no display); ``None`` if no points."""
    if not curve:
        return None
    from matplotlib.figure import Figure  # matplotlib loads only when plotting

    figure = Figure(figsize=(6.0, 3.5), layout="constrained")
    axes = figure.subplots()
    steps, losses = zip(*curve, strict=True)
    axes.plot(steps, losses, marker="o" if len(curve) < 30 else None, color="tab:blue")
    axes.set(xlabel="optimiser step", ylabel="training loss", title=title)
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=120)
    return path


def write_card(out: Path, card: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``training_card.json`` and its ``README.md`` rendering into ``out``; return both paths."""
    readme = out / README_FILE
    readme.write_text(render_readme(card), encoding="utf-8")
    path = out / CARD_FILE
    path.write_text(json.dumps(card, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path, readme


def render_readme(card: Mapping[str, Any]) -> str:
    """A Markdown page describing the adapter of ``card`` (base model, data, settings, result)."""
    base, data, result = card["base_model"], card["data"], card["result"]
    rows = [
        ("task", card["task"]),
        ("base model", f"{base['model']} ({base['kind']}: `{base['name_or_path']}`)"),
        ("data", f"`{data['path']}`: {data['trained_examples']} examples (sha256 `{data['sha256'][:16]}…`)"),
        ("skipped (longer than max length)", data["skipped_too_long"]),
        ("steps / epochs", f"{result['global_step']} / {result['epochs']:.2f}"),
        ("final loss", _number(result["final_loss"])),
        ("wall time", f"{result['wall_s']:.0f} s ({_number(result['seconds_per_example'])} s per example)"),
        ("device", f"{card['device']['type']} {card['device']['dtype']} × {card['device']['world_size']}"),
    ]
    hyper = ", ".join(f"{name}={value}" for name, value in card["hyperparameters"].items())
    lines = [
        f"# LoRA adapter: {card['task']} node of zhrag",
        "",
        f"Trained by `zhrag train` ({card.get('method', 'sft')}); load it with `zhrag ask --{card['task']}-adapter <this directory>`.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        f"Hyper-parameters: {hyper}.",
        "",
        f"![training loss]({LOSS_PLOT_FILE})" if card.get("files", {}).get("loss_plot") else "No loss was logged.",
        "",
        *([f"![reward margins and accuracies]({REWARDS_PLOT_FILE})", ""]
          if card.get("files", {}).get("rewards_plot") else []),
        f"Details: [{CARD_FILE}]({CARD_FILE}).",
        "",
    ]
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def read_json_object(path: Path, error: type[ZhragError] = ConfigError) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when there is no such file.

    Raises:
        ZhragError: (``error``) the file is unreadable or not a JSON object.
    """
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{path}: unreadable ({problem})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: expected a JSON object")
    return value
