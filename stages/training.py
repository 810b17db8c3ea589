"""The SGD solver every training stage shares: Caffe-style learning-rate multipliers, step schedule,
checkpoints that resume where a run stopped, and a CSV log of losses beside the checkpoint.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stages.atomic import atomic_path
from stages.errors import UserError
from stages.progress import SILENT, Progress

log = logging.getLogger("rcnn")

CHECKPOINT = "checkpoint.pt"
LOG = "log.csv"


@dataclass(frozen=True)
class Solver:
    """SGD with momentum; the rate is multiplied by ``gamma`` every ``step`` iterations (Caffe's "step")."""

    iterations: int
    learning_rate: float
    step: int
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0005
    checkpoint_every: int = 1000

    def __post_init__(self) -> None:
        for name in ("iterations", "step", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if not self.learning_rate > 0:
            raise UserError("--learning-rate must be positive")


def parameter_groups(parts: list[tuple[nn.Module, float, float]], weight_decay: float) -> list[dict]:
    """Caffe's per-layer multipliers: (module, weight lr multiplier, bias lr multiplier) -> SGD groups.

    Biases get no weight decay, as in the papers' solvers.
    """
    groups = []
    for module, weight_mult, bias_mult in parts:
        weights = [p for n, p in module.named_parameters() if p.requires_grad and not n.endswith("bias")]
        biases = [p for n, p in module.named_parameters() if p.requires_grad and n.endswith("bias")]
        groups.append({"params": weights, "lr_mult": weight_mult, "weight_decay": weight_decay})
        groups.append({"params": biases, "lr_mult": bias_mult, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


Step = Callable[[Any], tuple[torch.Tensor, Mapping[str, float]]]
"""``step(batch) -> (loss, metrics)``: the forward pass of one mini-batch."""


def classification_step(model: nn.Module, device: torch.device) -> Step:
    """Softmax log loss of ``model`` on an (inputs, labels) batch, with the batch's accuracy."""

    def step(batch):
        inputs, labels = (t.to(device, non_blocking=True) for t in batch)
        logits = model(inputs)
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        return nn.functional.cross_entropy(logits, labels), {"accuracy": accuracy}

    return step


def train(
    *,
    folder: Path,
    model: nn.Module,
    groups: list[dict],
    solver: Solver,
    stamp: Mapping[str, Any],
    batches: Callable[[int], Iterator[Any]],
    step: Step,
    resume: bool = True,
    progress: Progress = SILENT,
    description: str = "training",
    writer: bool = True,
) -> list[dict]:
    """Run ``solver`` on ``model``; return the log rows (iteration, lr, loss and metrics, averaged).

    ``batches(start)`` yields the mini-batches of iterations start, start + 1, ...; they must depend only
    on the iteration, so a resumed run sees the batches an uninterrupted one would have.
    ``FOLDER/checkpoint.pt`` is written every ``solver.checkpoint_every`` iterations and at the end; with
    ``resume`` a checkpoint made with the same ``stamp`` (the options that shape the result) is continued.
    In a data-parallel run every process trains and only the one with ``writer`` writes files.
    """
    folder = Path(folder)
    optimizer = torch.optim.SGD(groups, lr=solver.learning_rate, momentum=solver.momentum)
    start, rows = 0, []
    checkpoint = folder / CHECKPOINT
    stamp = {**dict(stamp), "solver": {k: v for k, v in asdict(solver).items() if k != "iterations"}}
    if resume and checkpoint.exists():
        start, rows = _restore(checkpoint, model, optimizer, stamp)
        log.info(
            "resuming %s from iteration %d of %d (%s)", description, start, solver.iterations, checkpoint
        )
    model.train()
    window: list[dict] = []
    with progress.task(description, solver.iterations, "it") as advance:
        advance(start)
        iterator = batches(start)
        for iteration in range(start, solver.iterations):
            rate = solver.learning_rate * solver.gamma ** (iteration // solver.step)
            for group in optimizer.param_groups:
                group["lr"] = rate * group["lr_mult"]
            loss, metrics = step(next(iterator))
            if not torch.isfinite(loss):
                raise RuntimeError(f"{description}: the loss became {loss.item()} at iteration {iteration}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            window.append({"loss": loss.item(), **metrics})
            done = iteration + 1
            if done % 20 == 0 or done == solver.iterations:
                rows.append(_average(done, rate, window))
                window = []
            advance(
                1, **{k: v for k, v in (rows[-1] if rows else {}).items() if k not in ("iteration", "lr")}
            )
            if writer and (done % solver.checkpoint_every == 0 or done == solver.iterations):
                _save(checkpoint, model, optimizer, stamp, done, rows)
                _write_log(folder / LOG, rows)
    return rows


def _average(iteration: int, rate: float, window: list[dict]) -> dict:
    keys = window[0].keys()
    return {"iteration": iteration, "lr": rate, **{k: sum(w[k] for w in window) / len(window) for k in keys}}


def _save(path: Path, model: nn.Module, optimizer, stamp: Mapping, iteration: int, rows: list[dict]) -> None:
    content = {
        "stamp": dict(stamp),
        "iteration": iteration,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": torch.get_rng_state(),
        "rows": rows,
    }
    with atomic_path(path) as tmp:
        torch.save(content, tmp)


def _restore(path: Path, model: nn.Module, optimizer, stamp: Mapping) -> tuple[int, list[dict]]:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged checkpoint cannot be trusted; say how to start over
        raise UserError(f"{path}: unreadable checkpoint ({exc}); rerun with --restart") from None
    if content["stamp"] != dict(stamp):
        changed = sorted(
            k for k in set(stamp) | set(content["stamp"]) if stamp.get(k) != content["stamp"].get(k)
        )
        raise UserError(
            f"{path}: checkpoint made with other settings ({', '.join(changed)}); "
            "rerun with the same options or with --restart"
        )
    model.load_state_dict(content["model"])
    optimizer.load_state_dict(content["optimizer"])
    torch.set_rng_state(content["rng"])
    return int(content["iteration"]), list(content["rows"])


def _write_log(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()}
        )
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
