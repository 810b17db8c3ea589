"""Atomic artifact writes: write to a temporary file in the same folder, then rename over the target.

A killed stage leaves either the old artifact or the new one, never a half-written file; a full disk is a
user error naming the file being written, and the stage's finished work stays for a rerun to continue.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.core.errors import UserError


def ensure_folder(folder: Path) -> Path:
    """Create ``folder`` (and its parents) for output; UserError naming it if that is impossible."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{folder}: cannot write here ({exc.strerror or exc})") from None
    return folder


def file_target(target: Path, example: str = "") -> Path:
    """``target``, checked to be writable as a file: UserError if it is a folder (say ``--grid out/``), so
    that a command can refuse it before its work rather than fail at the end. ``example``: a file name to
    suggest inside it."""
    target = Path(target)
    if target.is_dir():
        suggestion = f" such as {target / example}" if example else ""
        raise UserError(f"{target}: is a folder; give a file name{suggestion}")
    return target


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # reading the umask sets it: set straight back, at import, before any thread runs

FULL_BELOW_BYTES = 1 << 20
"""A write that fails with less free space than this on its file system failed for want of space."""


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether a failed write failed for want of space. OSErrors carry ENOSPC; h5py's RuntimeErrors name
    errno 28 in their text; torch.save's archive writer says only "unexpected pos", so the file system's
    free space decides."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "errno = 28" in str(exc) or os.strerror(errno.ENOSPC) in str(exc):
        return True
    try:
        return shutil.disk_usage(folder).free < FULL_BELOW_BYTES
    except OSError:
        return False


@contextlib.contextmanager
def writing(target: Path) -> Iterator[None]:
    """Run a write of ``target``; if it fails because the disk is full, raise the UserError that names
    ``target`` and says that finished work is kept (other errors pass through)."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if not _disk_full(exc, Path(target).parent):
            raise
        raise UserError(
            f"{target}: no space left on the device; finished work is kept: "
            "free some space and rerun the command to go on"
        ) from None


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` (readable as any new file
    would be, so that others sharing a run folder can read it), on error it is removed."""
    target = file_target(target)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=ensure_folder(target.parent)
        )
    except OSError as exc:
        raise UserError(f"{target}: cannot write here ({exc.strerror or exc})") from None
    with contextlib.suppress(OSError):  # mkstemp's file is private (0600): give it the mode open() would
        os.fchmod(fd, 0o666 & ~_UMASK)  # (writers reopen this file, so the mode stays; some mounts refuse)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with writing(target):
            yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(target: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON to ``target`` atomically; paths and the like become strings."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
