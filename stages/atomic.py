"""Atomic artifact writes: write to a temporary file in the same folder, then rename over the target.

A killed stage leaves either the old artifact or the new one, never a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.errors import UserError


def ensure_folder(folder: Path) -> Path:
    """Create ``folder`` (and its parents) for output; UserError naming it if that is impossible."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{folder}: cannot write here ({exc.strerror or exc})") from None
    return folder


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target``, on error it is removed."""
    target = Path(target)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=ensure_folder(target.parent)
        )
    except OSError as exc:
        raise UserError(f"{target}: cannot write here ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(target: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON to ``target`` atomically; paths and the like become strings."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
