"""Selective search's settings, torch- and OpenCV-free so that the command line shows them at once; the
search itself is ``stages.proposals.selective_search``'s."""

from __future__ import annotations

from dataclasses import dataclass

from stages.core.errors import UserError
from stages.core.options import option

MODES = ("single", "fast", "quality")
"""Uijlings et al.'s (2013) settings, as OpenCV builds them: "single", one grouping (HSV, k = 200, the
colour + texture + size + fill similarity), the paper's single best strategy; "fast", R-CNN's fast mode,
12 groupings (HSV and Lab, k = 150, 300, 450, two similarities); "quality", 100 (five colour spaces, five
k, four similarities). On the demo's images fast takes seven times as long as single and finds four
times as many boxes."""


@dataclass(frozen=True)
class ProposalOptions:
    """Selective search settings (Uijlings et al. 2013, as used by R-CNN: fast mode, ~2000 boxes)."""

    mode: str = option(
        "fast", help="Selective search strategy: single, fast (R-CNN's, the default) or quality."
    )
    max_boxes: int = option(2000, help="Boxes kept an image, in ranking order.")
    min_size: int = option(10, help="Drop boxes narrower or shorter (px).")
    max_side: int = option(500, help="Images with a longer side are shrunk for the search (px).")
    seed: int = option(0, help="Seed of selective search's random ranking.")
    workers: int = option(0, help="Worker processes (0: all cores).")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"--mode {self.mode!r}: choose {', '.join(MODES)}")
        for name in ("max_boxes", "min_size", "max_side"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if self.workers < 0:
            raise UserError("--workers must be 0 (all cores) or more")
