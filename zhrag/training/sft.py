"""Batches and loss for masked-label supervised fine-tuning, computing logits only where labels are learned.

The packaged Gemma-3 model has a 262k-token vocabulary: its output head costs more than the whole
transformer stack when applied to every position of a ~1,000-token prompt. Only the positions that
predict a learned label (the answer and its end token) need logits, so:

- :class:`LeftPadCollator` pads on the LEFT, which puts every sequence's learned tokens at the end of the
  batch, and gives each token its unpadded position id;
- :func:`tail_loss` asks the model for the logits of the last ``n`` positions only (``logits_to_keep``),
  ``n`` reaching back to the first learned label of the batch, and takes the shifted cross-entropy there.
  The result equals the usual full-logits causal-LM loss.
- :class:`TailLossTrainer` is a transformers ``Trainer`` whose ``compute_loss`` is :func:`tail_loss`,
  normalised like the Trainer's own loss (by the token count of the whole accumulated batch when the
  Trainer provides it), so gradient accumulation and multi-process data parallelism work unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - PyTorch's convention
from transformers import Trainer

from zhrag.training.masking import IGNORE_INDEX


class LeftPadCollator:
    """Stack tokenised examples into one left-padded batch (input ids, attention mask, position ids, labels).

    Padding gets ``pad_token_id``, attention 0 and label ``IGNORE_INDEX``; position ids count the real
    tokens of each row from 0, so a padded row is computed as if it were alone.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        """The batch of ``features`` (each with ``input_ids``, ``attention_mask``, ``labels``)."""
        width = max(len(feature["input_ids"]) for feature in features)
        batch = {
            "input_ids": torch.full((len(features), width), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(features), width), dtype=torch.long),
            "labels": torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long),
        }
        for row, feature in enumerate(features):
            start = width - len(feature["input_ids"])
            for name, tensor in batch.items():
                tensor[row, start:] = torch.tensor(feature[name], dtype=torch.long)
        batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        return batch


def logits_needed(labels: torch.Tensor) -> int:
    """Positions at the end of the batch whose logits the loss needs: from the one before the first learned label.

    ``0`` when no label is learned (then no logits are needed).
    """
    learned = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    if learned.numel() == 0:
        return 0
    width = labels.shape[-1]
    return min(width, width - int(learned[0]) + 1)


def tail_loss(
    model: Any, inputs: Mapping[str, torch.Tensor], *, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Causal-LM cross-entropy of ``inputs["labels"]``, computing logits for the learned tail of the batch only.

    Args:
        model: A causal LM accepting ``logits_to_keep`` (transformers >= 4.50 models, peft wrappers).
        inputs: A batch from :class:`LeftPadCollator` (other layouts are correct too, only slower when
            learned labels sit early in a row).
        num_items_in_batch: Learned (shifted) labels of the whole accumulated batch; ``None``: the mean
            over this batch's learned labels.

    Returns:
        The summed token losses divided by ``num_items_in_batch`` (or the mean), as a float32 scalar.
    """
    labels = inputs["labels"]
    model_inputs = {name: value for name, value in inputs.items() if name != "labels"}
    keep = logits_needed(labels)
    if keep < 2:  # nothing to predict: a zero loss that still belongs to the graph
        return sum(parameter.sum() * 0.0 for parameter in model.parameters() if parameter.requires_grad)
    logits = model(**model_inputs, logits_to_keep=keep).logits
    targets = labels[:, labels.shape[-1] - keep + 1 :]
    total = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1).to(logits.device),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    if num_items_in_batch is None:
        return total / (targets != IGNORE_INDEX).sum().clamp(min=1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.reshape(-1)[0].to(total.device)
    return total / num_items_in_batch


class TailLossTrainer(Trainer):
    """A ``Trainer`` computing :func:`tail_loss` (logits only for the learned tail of each batch)."""

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """The tail loss, scaled like the Trainer's own loss for token averaging across processes."""
        if return_outputs:
            raise NotImplementedError("TailLossTrainer computes the training loss only (no evaluation outputs)")
        loss = tail_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # num_items_in_batch counts every process's tokens and DDP averages the gradients over processes.
            loss = loss * self.accelerator.num_processes
        return loss
