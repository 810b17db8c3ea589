"""The shared solver: Caffe-style multipliers, and a resumed run ending where an uninterrupted one does;
the training frame every stage runs in."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from stages.core.errors import UserError
from stages.core.progress import Progress
from stages.datasets.records import Dataset, ImageRecord
from stages.runs.layout import RunLayout, TrainingFiles, manifest_path
from stages.training.options import Solver, TrainingOptions
from stages.training.solver import TrainingStage, iteration_batches, parameter_groups, train


def files_in(folder) -> TrainingFiles:
    return TrainingFiles(folder / "model.pt", folder / "checkpoint.pt", folder / "log.csv")


def test_parameter_groups_multiply_rates_and_spare_biases_from_decay():
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    groups = parameter_groups([(net[0], 1.0, 2.0), (net[1], 10.0, 20.0)], 0.0005)
    assert [(g["lr_mult"], g["weight_decay"], len(g["params"])) for g in groups] == [
        (1.0, 0.0005, 1), (2.0, 0.0, 1), (10.0, 0.0005, 1), (20.0, 0.0, 1),
    ]  # fmt: skip


class _StopAfter(Progress):
    """A progress reporter that interrupts training after ``n`` iterations, like Ctrl-C would."""

    def __init__(self, n):
        self.n = n

    def task(self, description, total, unit="it", done=0):
        import contextlib

        @contextlib.contextmanager
        def managed():
            count = {"done": 0}

            def advance(n=1, **fields):
                count["done"] += 1
                if count["done"] > self.n:
                    raise KeyboardInterrupt

            yield advance

        return managed()


def _run(folder, iterations, progress=None, resume=True):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 2))
    solver = Solver(iterations=iterations, learning_rate=0.1, step=4, checkpoint_every=2)

    def make(i):
        g = torch.Generator().manual_seed(i)
        return torch.randn(16, 3, generator=g), torch.randint(0, 2, (16,), generator=g)

    def batches(start):  # a DataLoader, as the stages use: it draws its seed from torch's generator
        return iteration_batches(make, start, iterations, workers=0)

    def step(batch):
        x, y = batch
        return nn.functional.cross_entropy(model(x), y), {}

    kwargs = {"progress": progress} if progress else {}
    groups = parameter_groups([(model, 1, 2)], 1e-4)
    train(
        files=files_in(folder),
        model=model,
        groups=groups,
        solver=solver,
        stamp={"k": 1},
        batches=batches,
        step=step,
        resume=resume,
        **kwargs,
    )
    return model.state_dict()


def test_resumed_training_matches_uninterrupted(tmp_path):
    straight = _run(tmp_path / "a", 8, resume=False)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", 8, progress=_StopAfter(5))
    resumed = _run(tmp_path / "b", 8)
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key])
    assert (tmp_path / "b" / "log.csv").read_text().splitlines()[0].startswith("iteration,lr,loss")


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    _run(tmp_path, 2)
    torch.manual_seed(0)
    model = nn.Linear(3, 8)
    with pytest.raises(UserError, match="checkpoint made with other settings"):
        train(
            files=files_in(tmp_path),
            model=model,
            groups=parameter_groups([(model, 1, 2)], 0.0),
            solver=Solver(4, 0.1, 4, checkpoint_every=2),
            stamp={"k": 2},
            batches=iter,
            step=None,
        )


@dataclass(frozen=True)
class _Options(TrainingOptions):
    iterations: int = 4
    learning_rate: float = 0.1
    step: int = 2
    checkpoint_every: int = 2
    workers: int = 0


def test_options_check_the_solver_and_stamp_what_shapes_the_weights():
    with pytest.raises(UserError, match="--iterations must be at least 1"):
        _Options(iterations=0)
    with pytest.raises(UserError, match="--learning-rate must be positive"):
        _Options(learning_rate=0.0)
    stamp = _Options(iterations=9, workers=3, device="cpu").resume_stamp()
    assert "iterations" not in stamp and "workers" not in stamp and "device" not in stamp
    assert stamp == _Options().resume_stamp() and stamp["seed"] == 0
    assert "learning_rate" not in stamp  # the solver's settings: train() stamps them
    assert _Options().solver() == Solver(4, 0.1, 2, checkpoint_every=2)


def test_the_stage_seeds_trains_and_writes_the_manifest(tmp_path):
    files = RunLayout(tmp_path).method("m").finetune

    def once():
        stage = TrainingStage("finetune", _Options(seed=3, device="cpu"), files, method="m", resume=False)
        model = nn.Linear(3, 2)  # initialised after the stage seeded torch's generator
        batches = [(torch.randn(8, 3), torch.randint(0, 2, (8,))) for _ in range(4)]
        stage.train(
            model,
            parameter_groups([(model, 1, 2)], 0.0),
            lambda start: iter(batches[start:]),
            lambda batch: (nn.functional.cross_entropy(model(batch[0]), batch[1]), {"accuracy": 0.5}),
            stamp={"classes": ["a"]},
            description="test",
        )
        objects = ImageRecord(
            "x",
            tmp_path / "x.jpg",
            9,
            9,
            np.zeros((2, 4), np.float32),
            np.array([1, 1]),
            np.array([0, 1], bool),
        )
        dataset = Dataset(tmp_path, "train", ("a", "b"), (objects,), annotated=True)
        trained = stage.finish(
            inputs=[], trained_on={"windows": 8}, dataset=dataset, results={"backbone": "x"}
        )
        return model, trained

    first, summary = once()
    second, _ = once()
    torch.testing.assert_close(first.weight, second.weight)
    assert summary.trained_on == {"windows": 8} and summary.iterations == 4 and summary.writer
    manifest = json.loads(manifest_path(files.model).read_text())
    assert manifest["stage"] == "finetune" and manifest["options"]["method"] == "m"
    assert manifest["results"]["windows"] == 8 and manifest["results"]["final_accuracy"] == 0.5
    assert manifest["results"]["class_objects"] == {"a": 1, "b": 0}  # the difficult one is not learnt
    assert files.checkpoint.is_file() and files.log.read_text().startswith("iteration,lr,loss,accuracy")
