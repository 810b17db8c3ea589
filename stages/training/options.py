"""The options of every training stage, torch-free so that the command line shows their defaults at once:
the solver's settings (``Solver``), what every training stage shares (``TrainingOptions``), and
pre-training's (``PretrainOptions``). ``stages.training.solver`` trains by them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from stages.core.errors import UserError
from stages.core.options import device_option, option, precision_option, seed_option, workers_option
from stages.networks.options import check_precision


@dataclass(frozen=True)
class Solver:
    """SGD with momentum; the rate is multiplied by ``gamma`` every ``step`` iterations (Caffe's "step")."""

    iterations: int = option(help="SGD iterations (mini-batches).")
    learning_rate: float = option(help="Base learning rate.")
    step: int = option(help="Multiply the rate by 0.1 every this many iterations.")
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0005
    checkpoint_every: int = option(1000, help="Save a checkpoint every this many iterations.")

    def __post_init__(self) -> None:
        for name in ("iterations", "step", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if not self.learning_rate > 0:
            raise UserError("--learning-rate must be positive")


@dataclass(frozen=True)
class TrainingOptions(Solver):
    """What every training stage's options share: the solver's settings (its fields, declared once in
    ``Solver``), checkpoints, seed, device and the precision of the forward and backward passes
    (``stages.networks.precision``).

    Each stage subclasses it with its paper's iterations, learning rate and step, and its own fields.
    """

    seed: int = seed_option()
    device: str = device_option()
    precision: str = precision_option()

    RUNTIME: ClassVar[tuple[str, ...]] = ("iterations", "workers", "device")
    """Fields (of the stage's, where it has them) that do not shape the weights a run ends with: a
    checkpoint resumes across changes to them (more iterations extend a finished run)."""

    def __post_init__(self) -> None:
        super().__post_init__()  # the solver's settings checked: bad ones fail here, before any work
        check_precision(self.precision)

    def solver(self) -> Solver:
        """The solver's settings alone."""
        return Solver(**{f.name: getattr(self, f.name) for f in fields(Solver)})

    @property
    def training_parts(self) -> tuple[str, ...]:
        """The trainings a stage runs one after another, each with its own checkpoint and log
        (``TrainingFiles.part``); none where it trains once."""
        return ()

    def resume_stamp(self) -> dict[str, Any]:
        """The options a checkpoint must have been made with to be continued, but the solver's, which
        ``train`` stamps itself."""
        solver = {f.name for f in fields(Solver)}
        return {k: v for k, v in asdict(self).items() if k not in self.RUNTIME and k not in solver}


@dataclass(frozen=True)
class PretrainOptions(TrainingOptions):
    """Crop classification: SGD at 0.01, momentum 0.9, weight decay 0.0005 (the ImageNet solver's), x0.1
    after 1500 of 2000 iterations; 128 crops a mini-batch, jittered by up to 10% of their size."""

    iterations: int = 2000
    learning_rate: float = 0.01
    step: int = 1500
    checkpoint_every: int = 500
    backbone: str = option("tiny", help="Backbone: tiny, alexnet, vgg16 or zf5.")
    weights: str | None = option(None, help="Start from: imagenet, or a weights file (default: random init).")
    batch_size: int = option(128, help="Crops a mini-batch.")
    jitter: float = 0.1
    workers: int = workers_option()


def checked_test_scale(scales: tuple[int, ...], max_size: int, test_scale: int | None) -> int:
    """The test scale of a network trained at ``scales`` (shorter sides, the longer at most ``max_size``):
    ``test_scale`` if given, else the one training scale, or 600 with several (Fast R-CNN section 5.2);
    UserError for scales below 16 px or above ``max_size``."""
    if not scales or min(scales) < 16 or max_size < max(scales):
        raise UserError("--scales: give shorter sides of at least 16 px, none above --max-size")
    chosen = test_scale or (scales[0] if len(scales) == 1 else 600)
    if not 16 <= chosen <= max_size:
        raise UserError(
            f"--test-scale {chosen}: give a shorter side of at least 16 px, not above --max-size {max_size}"
        )
    return chosen
