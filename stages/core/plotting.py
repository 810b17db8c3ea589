"""Figures the toolkit draws (PR curves, the report's charts): matplotlib's pyplot on the Agg backend, with
a font for every character of the texts a figure shows.

Class names come from users' annotations in any script. matplotlib's default font (DejaVu Sans) has
Latin, Greek and Cyrillic but no CJK: without help a Chinese or Japanese name is drawn as empty boxes and
matplotlib warns once a missing glyph. ``drawing`` finds an installed font that has the missing
characters and adds it as a fallback (matplotlib falls back glyph by glyph); where no font has them, it
says so in one warning and keeps matplotlib's own warnings off the terminal.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("rcnn")

_NOT_FALLBACKS = ("Last Resort",)
"""Fonts that have every character as the same empty box: no better than the missing glyph."""


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed), imported when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def drawing(texts: Iterable[str]) -> Iterator[Any]:
    """pyplot for figures that show ``texts`` (class names, labels), saved inside the block: characters
    the default font lacks are drawn with installed fonts that have them (``fallback_font``, as many as
    it takes); if none has some, one warning names the texts that cannot be drawn whole, once a
    process."""
    plt = pyplot()
    texts = sorted(set(texts))
    default = _default_family()
    missing = {c for text in texts for c in text if not c.isspace()} - _characters(_font_path(default))
    families = [default]
    while missing and (fallback := fallback_font(frozenset(missing))) is not None:
        families.append(fallback[0])  # one font a script, say: each has what the others lack
        missing -= fallback[1]
    if missing:
        _say_undrawable(tuple(text for text in texts if missing & set(text)))
    with plt.rc_context({"font.family": families}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        yield plt


@functools.lru_cache(maxsize=64)
def fallback_font(characters: frozenset[str]) -> tuple[str, frozenset[str]] | None:
    """(family, the characters of ``characters`` it has) of the installed font that has the most of
    them (ties: the family first in name order), or None when no font has any. The fonts matplotlib
    knows come first; then the system's font files it has not listed yet (its list is a cache made
    when it was first imported: a font installed since is missing from it), added to its list."""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    best: tuple[int, str, frozenset[str]] | None = None
    for entry in sorted(manager.ttflist, key=lambda entry: (entry.name, entry.fname)):
        has = characters & _characters(entry.fname)
        if has and not entry.name.startswith(_NOT_FALLBACKS) and (best is None or len(has) > best[0]):
            best = (len(has), entry.name, frozenset(has))
    if best is not None and best[2] == characters:
        return best[1], best[2]
    listed = {entry.fname for entry in manager.ttflist}
    for path in sorted(set(font_manager.findSystemFonts()) - listed):
        has = characters & _characters(path)
        if has and (best is None or len(has) > best[0]):
            manager.addfont(path)
            best = (len(has), font_manager.FontProperties(fname=path).get_name(), frozenset(has))
    return None if best is None else (best[1], best[2])


def _default_family() -> str:
    import matplotlib

    return str(matplotlib.rcParams["font.sans-serif"][0])


def _font_path(family: str) -> str:
    from matplotlib import font_manager

    return str(font_manager.findfont(font_manager.FontProperties(family=family)))


@functools.cache
def _characters(path: str) -> frozenset[str]:
    """Every character the font file at ``path`` has a glyph for (empty when it cannot be read)."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(chr(code) for code in FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


@functools.cache
def _say_undrawable(texts: tuple[str, ...]) -> None:
    log.warning(
        "no installed font has every character of %s: figures show empty boxes for them "
        "(install a font with them, such as Noto Sans CJK: fonts-noto-cjk on Debian and Ubuntu)",
        ", ".join(texts),
    )
