"""How every network is trained: the shared SGD solver (Caffe-style learning-rate multipliers, step
schedule, checkpoints that resume where a run stopped, a CSV log of losses) and the frame around it that
pre-training and the three fine-tunings share (``TrainingOptions``, ``TrainingStage``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from stages.core.atomic import atomic_path
from stages.core.errors import UserError
from stages.core.loading import loaded
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.networks.models import read_weights
from stages.networks.precision import autocast, check_supported, grad_scaler
from stages.runs.devices import pick_device
from stages.runs.layout import TrainingFiles, write_manifest
from stages.runs.processes import SINGLE, Processes
from stages.training.options import Solver, TrainingOptions

log = logging.getLogger("rcnn")


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


BatchLoss = Callable[[Any], tuple[torch.Tensor, Mapping[str, float]]]
"""``step(batch) -> (loss, metrics)``: the forward pass of one mini-batch."""


def classification_step(model: nn.Module, device: torch.device) -> BatchLoss:
    """Softmax log loss of ``model`` on an (inputs, labels) batch, with the batch's accuracy."""

    def step(batch):
        inputs, labels = (t.to(device, non_blocking=True) for t in batch)
        logits = model(inputs)
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        return nn.functional.cross_entropy(logits, labels), {"accuracy": accuracy}

    return step


class _Iterations(TorchDataset):
    def __init__(self, make: Callable[[int], object], start: int, stop: int):
        self.make, self.start, self.stop = make, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int):
        return self.make(self.start + index)


def iteration_batches(
    make: Callable[[int], object],
    start: int,
    stop: int,
    workers: int,
    pin_memory: bool = False,
    ahead: bool = False,
) -> Iterator:
    """The batches ``make(start) .. make(stop - 1)``, made by ``workers`` DataLoader processes (0: here;
    with ``ahead`` in a thread, ahead of the training step: ``stages.core.loading.loaded``)."""
    return loaded(_Iterations(make, start, stop), workers, convert=True, pin_memory=pin_memory, ahead=ahead)


def train(
    *,
    files: TrainingFiles,
    model: nn.Module,
    groups: list[dict],
    solver: Solver,
    stamp: Mapping[str, Any],
    batches: Callable[[int], Iterator[Any]],
    step: BatchLoss,
    resume: bool = True,
    progress: Progress = SILENT,
    description: str = "training",
    procs: Processes = SINGLE,
    precision: str = "fp32",
) -> list[dict]:
    """Run ``solver`` on ``model``; return the log rows (iteration, lr, loss and metrics, averaged).

    ``batches(start)`` yields the mini-batches of iterations start, start + 1, ...; they must depend only
    on the iteration, so a resumed run sees the batches an uninterrupted one would have.
    ``files.checkpoint`` is written every ``solver.checkpoint_every`` iterations and at the end, with the
    log beside it; with ``resume`` a checkpoint made with the same ``stamp`` (the options that shape the
    result) is continued bit for bit: the checkpoint keeps every process's random generators (dropout),
    restored once the batches' iterator exists (a DataLoader draws its seed from the global generator).
    In a data-parallel run (``procs``) every process trains and only rank 0 writes files. ``precision``:
    of the forward pass on ``procs.device`` (``stages.networks.precision``); fp16 scales the loss.
    """
    device = procs.device
    check_supported(precision, device)
    optimizer = torch.optim.SGD(groups, lr=solver.learning_rate, momentum=solver.momentum)
    scaler = grad_scaler(precision, device)
    progress = progress if procs.writer else SILENT
    checkpoint = files.checkpoint
    stamp = {**dict(stamp), "solver": {k: v for k, v in asdict(solver).items() if k != "iterations"}}
    resumed = None
    if resume and checkpoint.exists():
        resumed = _restore(checkpoint, model, optimizer, scaler, stamp, procs.world_size)
    start, rows, window = (resumed.iteration, resumed.rows, resumed.window) if resumed else (0, [], [])
    if resumed:
        log.info(
            "resuming %s from iteration %d of %d (%s)", description, start, solver.iterations, checkpoint
        )
    model.train()
    with progress.task(description, solver.iterations, "it", start) as advance:
        iterator = batches(start)
        if resumed:
            _set_generators(resumed.generators[procs.rank])
        for iteration in range(start, solver.iterations):
            rate = solver.learning_rate * solver.gamma ** (iteration // solver.step)
            for group in optimizer.param_groups:
                group["lr"] = rate * group["lr_mult"]
            batch = next(iterator)
            with autocast(precision, device):
                loss, metrics = step(batch)
            if not torch.isfinite(loss):
                raise RuntimeError(f"{description}: the loss became {loss.item()} at iteration {iteration}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            window.append({"loss": loss.item(), **metrics})
            done = iteration + 1
            if done % 20 == 0 or done == solver.iterations:
                rows.append(_average(done, rate, window))
                window = []
            advance(
                1, **{k: v for k, v in (rows[-1] if rows else {}).items() if k not in ("iteration", "lr")}
            )
            if done % solver.checkpoint_every == 0 or done == solver.iterations:
                generators = procs.gather(_generators())  # every process takes part
                if procs.writer:
                    state = _TrainingState(done, rows, window, generators)
                    _save(checkpoint, model, optimizer, scaler, stamp, state)
                    _write_log(files.log, rows)
    return rows


def _average(iteration: int, rate: float, window: list[dict]) -> dict:
    keys = window[0].keys()
    return {"iteration": iteration, "lr": rate, **{k: sum(w[k] for w in window) / len(window) for k in keys}}


@dataclass(frozen=True)
class _TrainingState:
    """What a checkpoint keeps besides the weights and the optimizer: where training stopped, the log
    rows, the iterations not yet averaged into a row, and each process's random generators."""

    iteration: int
    rows: list[dict]
    window: list[dict]
    generators: list[dict[str, Any]]


def _generators() -> dict[str, Any]:
    """This process's torch generators: the CPU one and, once CUDA is in use, every GPU's."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _set_generators(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(path: Path, model: nn.Module, optimizer, scaler, stamp: Mapping, resumed: _TrainingState) -> None:
    content = {
        "stamp": dict(stamp),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        **asdict(resumed),
    }
    with atomic_path(path) as tmp:
        torch.save(content, tmp)


def _restore(
    path: Path, model: nn.Module, optimizer, scaler, stamp: Mapping, world_size: int
) -> _TrainingState:
    content = read_weights(path, hint="rerun with --restart")
    try:
        resumed = _TrainingState(**{f.name: content[f.name] for f in fields(_TrainingState)})
    except (TypeError, KeyError):  # a foreign or older checkpoint cannot be continued
        raise UserError(f"{path}: not a checkpoint of this version of rcnn; rerun with --restart") from None
    if content["stamp"] != dict(stamp):
        changed = sorted(
            k for k in set(stamp) | set(content["stamp"]) if stamp.get(k) != content["stamp"].get(k)
        )
        raise UserError(
            f"{path}: checkpoint made with other settings ({', '.join(changed)}); "
            "rerun with the same options or with --restart"
        )
    if len(resumed.generators) != world_size:
        raise UserError(
            f"{path}: checkpoint of {len(resumed.generators)} processes, not {world_size}; "
            "rerun with as many or with --restart"
        )
    model.load_state_dict(content["model"])
    optimizer.load_state_dict(content["optimizer"])
    if scaler.is_enabled():  # fp16's loss scale, where it grew or shrank
        scaler.load_state_dict(content["scaler"])
    return resumed


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


def weight_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in state-dict order: equal digests, equal weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainingSummary:
    """What a training stage did: the model it wrote, what it learnt from (``trained_on``: counts such as
    ``{"windows": ..., "foreground_windows": ...}``), the last logged loss and accuracy, and its time.
    ``writer`` is False on the processes of a data-parallel run that wrote nothing (rank > 0)."""

    path: Path
    trained_on: dict[str, int]
    iterations: int
    final_loss: float
    final_accuracy: float
    seconds: float
    processes: int = 1
    writer: bool = True


class TrainingStage:
    """The frame every training stage runs in, around its own model and mini-batches.

    Made at the start of a stage, it seeds torch's generator and picks the device; ``train`` runs the
    solver from the options with checkpoints (resumed with ``resume``) and ``finish`` writes the model's
    manifest and sums up the run. In a data-parallel run (``procs``, from ``stages.runs.processes``) only
    rank 0 shows progress and writes files.
    """

    def __init__(
        self,
        stage: str,
        options: TrainingOptions,
        files: TrainingFiles,
        *,
        method: str | None = None,
        resume: bool = True,
        progress: Progress = SILENT,
        procs: Processes | None = None,
    ):
        self.started = time.perf_counter()
        self.stage, self.options, self.files, self.method = stage, options, files, method
        self.resume, self.progress = resume, progress
        torch.manual_seed(options.seed)
        self.procs = procs or Processes(device=pick_device(options.device))
        self.device = self.procs.device
        check_supported(options.precision, self.device)  # before any data is read
        self.rows: list[dict] = []

    @property
    def writer(self) -> bool:
        return self.procs.writer

    def parallel(self, module: nn.Module) -> nn.Module:
        """``module`` as a training step should call it: under ``torchrun`` wrapped in
        ``DistributedDataParallel`` (which averages the gradients over the processes), else itself; torch's
        generator is then seeded by rank, so that each process draws its own dropout masks."""
        runner = module
        if self.procs.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            cuda = self.device.type == "cuda"
            runner = DistributedDataParallel(module, device_ids=[self.device] if cuda else None)
        torch.manual_seed(self.options.seed + self.procs.rank)
        return runner

    def agreed_weights(self, model: nn.Module) -> list[str]:
        """Every process's ``weight_digest`` of the trained ``model``, rank order; RuntimeError unless they
        are equal (data-parallel processes must end with the same weights)."""
        digests = self.procs.gather(weight_digest(model))
        if len(set(digests)) != 1:
            raise RuntimeError(f"data-parallel ranks ended with different weights: {digests}")
        return digests

    def train(
        self,
        model: nn.Module,
        groups: list[dict],
        batches: Callable[[int], Iterator[Any]],
        step: BatchLoss,
        *,
        stamp: Mapping[str, Any],
        description: str,
        files: TrainingFiles | None = None,
    ) -> list[dict]:
        """Run the options' solver on ``model``; ``stamp`` adds what else the result depends on (the
        classes, the weights started from) to the options a checkpoint must match. ``files``: where the
        checkpoint and log go, for one part of a training in several (default: the stage's)."""
        self.rows = train(
            files=files or self.files,
            model=model,
            groups=groups,
            solver=self.options.solver(),
            stamp={**self.options.resume_stamp(), **stamp},
            batches=batches,
            step=step,
            resume=self.resume,
            progress=self.progress,
            description=description,
            procs=self.procs,
            precision=self.options.precision,
        )
        return self.rows

    def finish(
        self,
        *,
        inputs: list[Path],
        trained_on: Mapping[str, int],
        dataset: Dataset,
        results: Mapping[str, Any] | None = None,
    ) -> TrainingSummary:
        """Write the model's manifest (options, inputs, counts, the objects of each class of ``dataset``
        it learnt from, the last loss and accuracy, seconds) and return the summary."""
        seconds = time.perf_counter() - self.started
        last = self.rows[-1]
        summary = TrainingSummary(
            self.files.model,
            dict(trained_on),
            self.options.iterations,
            last["loss"],
            last["accuracy"],
            seconds,
            self.procs.world_size,
            self.writer,
        )
        if self.writer:
            options = asdict(self.options)
            write_manifest(
                self.files.model,
                stage=self.stage,
                options={"method": self.method, **options} if self.method else options,
                inputs=inputs,
                seconds=seconds,
                results={
                    **dict(trained_on),
                    "class_objects": dataset.object_counts(),
                    **dict(results or {}),
                    "final_loss": summary.final_loss,
                    "final_accuracy": summary.final_accuracy,
                },
            )
        return summary
