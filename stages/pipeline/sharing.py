"""Artifacts that several runs would make identically, made once: ``rcnn study``'s variants share their
proposals, backbone, fine-tuned networks and feature caches wherever their options agree.

A step's fingerprint (``fingerprints``) is a hash of what decides its files: its key, the options its
manifest must record (``Step.expects``, the same record that tells ``rcnn run`` a step is up to date),
the dataset, and the fingerprints of the steps it reads (``Step.after``). Each step a run makes is
recorded in an index (``SharedArtifacts``) with the files it wrote. A later run whose step has a recorded
fingerprint takes those files instead of making them (``share``): hard links (copies across file systems),
with the manifests rewritten to name this run's paths, so that the run folder is whole and ``rcnn run``
finds it up to date.

Linking is safe because no stage writes a finished file in place: every artifact, checkpoint, log and
manifest is written to a temporary file and renamed over its target (``stages.core.atomic``), so a run
that makes a shared file again replaces its own link and leaves the other run's file as it was. A file
changed since it was recorded (its run made the step again) is never taken.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stages.core.atomic import ensure_folder, write_json
from stages.core.errors import UserError
from stages.runs.layout import MANIFEST_SUFFIX, REPLICAS, describe_input
from stages.runs.steps import Step, StepKey

INDEX_VERSION = 1

FileStamp = tuple[int, int]
"""A file's size and modification time (ns): what a record must still find to take the file."""


def fingerprints(steps: Sequence[Step], data: Mapping[str, Any]) -> dict[StepKey, str]:
    """Each step's fingerprint: a hash of its key, its ``expects``, the dataset ``data`` (the resolved
    ``[data]`` table) and the fingerprints of the steps it reads; ``steps`` in dependency order."""
    found: dict[StepKey, str] = {}
    for step in steps:
        identity = {
            "key": asdict(step.key),
            "expects": step.expects,
            "data": data,
            "after": [found[key] for key in step.after],
        }
        text = json.dumps(identity, sort_keys=True, default=str)
        found[step.key] = hashlib.sha256(text.encode()).hexdigest()[:20]
    return found


@dataclass(frozen=True)
class Holder:
    """Where a step's files are: the run folder ``root`` (its proposals in ``shared``: a replica's are its
    run's), and each file's path in ``root`` with its stamp when it was recorded."""

    root: Path
    shared: Path
    files: Mapping[str, FileStamp]

    def current(self, superseded: Callable[[str, FileStamp], bool] = lambda name, stamp: False) -> bool:
        """Whether every file is still there as recorded (a manifest need only be there: sharing rewrites
        it); ``superseded`` excuses a file a later step of the same run has since completed."""
        for name, stamp in self.files.items():
            found = _stamp(self.root / name)
            if found is None:
                return False
            if found != stamp and not name.endswith(MANIFEST_SUFFIX) and not superseded(name, found):
                return False
        return True


class SharedArtifacts:
    """The index of the steps a study's runs made: fingerprint -> the runs that hold its files
    (``Holder``), kept in the JSON file ``path``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.holders: dict[str, list[Holder]] = {}
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        try:
            content = json.loads(self.path.read_text(encoding="utf-8"))
            if content.get("version") != INDEX_VERSION:
                return  # an index of another version: the runs' files are made or found again
            for fingerprint, holders in content["steps"].items():
                self.holders[fingerprint] = [
                    Holder(
                        Path(h["root"]),
                        Path(h["shared"]),
                        {name: (int(a), int(b)) for name, (a, b) in h["files"].items()},
                    )
                    for h in holders
                ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{self.path}: unreadable index of shared artifacts ({exc}); remove it") from None

    def save(self) -> None:
        steps = {
            fingerprint: [
                {
                    "root": str(h.root),
                    "shared": str(h.shared),
                    "files": {k: list(v) for k, v in h.files.items()},
                }
                for h in holders
            ]
            for fingerprint, holders in sorted(self.holders.items())
        }
        ensure_folder(self.path.parent)
        write_json(self.path, {"version": INDEX_VERSION, "steps": steps})

    def record(self, fingerprint: str, holder: Holder) -> None:
        """``holder`` has the files of the step ``fingerprint`` (replacing what it held before)."""
        holder = Holder(holder.root.resolve(), holder.shared.resolve(), holder.files)
        others = [h for h in self.holders.get(fingerprint, []) if h.root != holder.root]
        self.holders[fingerprint] = [*others, holder]

    def find(self, fingerprint: str, root: Path, wanted: Iterable[str] = ()) -> Holder | None:
        """A run other than ``root`` that holds the files of ``fingerprint`` as recorded. A file that a
        later step of the holder's own run has completed since (SPP-net's training cache, completed after
        fine-tuning) is taken as it is now when that later step is one of ``wanted`` (fingerprints the
        taking run will also take)."""
        wanted = set(wanted)
        for holder in self.holders.get(fingerprint, []):
            if holder.root.resolve() == root.resolve():
                continue

            def superseded(name: str, found: FileStamp, holder: Holder = holder) -> bool:
                return any(
                    later.root == holder.root and later.files.get(name) == found
                    for key in wanted
                    for later in self.holders.get(key, [])
                )

            if holder.current(superseded):
                return holder
        return None


def _stamp(path: Path) -> FileStamp | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under the run folder ``root`` (its replicas' folder and hidden parts left out): relative
    path -> (size, mtime ns, inode), to tell what a step wrote (``written``)."""
    found = {}
    for path in Path(root).rglob("*"):
        name = path.relative_to(root)
        if name.parts[0] == REPLICAS or any(part.startswith(".") for part in name.parts):
            continue
        if path.is_file():
            stat = path.stat()
            found[name.as_posix()] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return found


def written(
    before: Mapping[str, tuple[int, int, int]], after: Mapping[str, tuple[int, int, int]]
) -> dict[str, FileStamp]:
    """The files of snapshot ``after`` that are new or changed since ``before``, with their stamps."""
    return {
        name: (size, mtime)
        for name, (size, mtime, inode) in after.items()
        if before.get(name) != (size, mtime, inode)
    }


def take(holder: Holder, root: Path, shared: Path) -> None:
    """Put ``holder``'s files into the run folder ``root`` (proposals in ``shared``): each linked (copied
    where the file system cannot link), each manifest written anew for its place here."""
    for name in holder.files:
        source, target = holder.root / name, root / name
        ensure_folder(target.parent)
        if name.endswith(MANIFEST_SUFFIX):
            _rewrite_manifest(source, target, {holder.root: root, holder.shared: shared})
        else:
            _link(source, target)


def _link(source: Path, target: Path) -> None:
    """``target`` made the same file as ``source``: a hard link, or a copy keeping its stamp."""
    partial = target.with_name(f".{target.name}.linking")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise UserError(f"{target}: cannot share {source} ({exc.strerror or exc})") from None
        shutil.copy2(source, partial)
    os.replace(partial, target)


def _rewrite_manifest(source: Path, target: Path, places: Mapping[Path, Path]) -> None:
    """The manifest ``source`` written to ``target`` with every path in a folder of ``places`` (the
    holder's run -> this run) moved to this run's; an input so moved is stamped as this run has it, the
    step that made it having the same fingerprint."""
    moves = sorted(
        ((Path(a).resolve(), Path(b).resolve()) for a, b in places.items()), key=lambda p: -len(str(p[0]))
    )

    def moved(text: str) -> str | None:
        path = Path(text).resolve()
        for old, new in moves:
            if path.is_relative_to(old):
                return str(new / path.relative_to(old))
        return None

    content = json.loads(source.read_text(encoding="utf-8"))
    content["location"] = moved(content["location"]) or content["location"]
    inputs = []
    for entry in content.get("inputs", []):
        path = moved(entry["path"])
        if path is not None and Path(path).exists():
            entry = describe_input(Path(path))
        inputs.append(entry)
    content["inputs"] = inputs
    write_json(target, content)
