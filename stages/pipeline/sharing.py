"""Artifacts that several runs would make identically, made once: ``rcnn study``'s variants share their
proposals, backbone, fine-tuned networks and feature caches wherever their options agree.

A step's fingerprint (``fingerprints``) is a hash of what decides its files: its key, the options its
manifest must record (``Step.expects``, the same record that tells ``rcnn run`` a step is up to date),
the dataset, and the fingerprints of the steps it reads (``Step.after``). Each step a run makes is
recorded in an index (``SharedArtifacts``) with the files it wrote. A later run whose step has a recorded
fingerprint takes those files instead of making them (``stages.pipeline.run.run_config`` with ``shared``,
``take``): hard links (copies across file systems),
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

from stages.config.run_config import DataSettings
from stages.core.atomic import ensure_folder, write_json
from stages.core.errors import UserError
from stages.runs.layout import MANIFEST_SUFFIX, REPLICAS, RunLayout, describe_input
from stages.runs.steps import Step, StepKey

INDEX_VERSION = 1

FileStamp = tuple[int, int]
"""A file's size and modification time (ns): what a record must still find to take the file."""


def fingerprints(steps: Sequence[Step], data: DataSettings) -> dict[StepKey, str]:
    """Each step's fingerprint: a hash of its key, its ``expects``, the dataset ``data`` (its root
    resolved) and the fingerprints of the steps it reads; ``steps`` in dependency order."""
    dataset = {**asdict(data), "root": str(Path(data.root).resolve())}
    found: dict[StepKey, str] = {}
    for step in steps:
        identity = {
            "key": asdict(step.key),
            "expects": step.expects,
            "data": dataset,
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
            found = stamp_of(self.root / name)
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
        self.holders: dict[str, list[Holder]] = self._read()
        self._recorded: dict[str, list[Holder]] = {}

    def _read(self) -> dict[str, list[Holder]]:
        """The index as its file holds it now; empty without one, or for another version's."""
        if not self.path.is_file():
            return {}
        try:
            content = json.loads(self.path.read_text(encoding="utf-8"))
            if content.get("version") != INDEX_VERSION:
                return {}  # an index of another version: the runs' files are made or found again
            return {
                fingerprint: [
                    Holder(
                        Path(h["root"]),
                        Path(h["shared"]),
                        {name: (int(a), int(b)) for name, (a, b) in h["files"].items()},
                    )
                    for h in holders
                ]
                for fingerprint, holders in content["steps"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{self.path}: unreadable index of shared artifacts ({exc}); remove it") from None

    def save(self) -> None:
        """Write the index: what its file holds now (another study may have added to it since it was
        read) with this one's records on top."""
        merged = self._read()
        for fingerprint, holders in self._recorded.items():
            for holder in holders:
                _replace(merged, fingerprint, holder)
        self.holders = merged
        steps = {
            fingerprint: [
                {
                    "root": str(h.root),
                    "shared": str(h.shared),
                    "files": {k: list(v) for k, v in h.files.items()},
                }
                for h in holders
            ]
            for fingerprint, holders in sorted(merged.items())
        }
        ensure_folder(self.path.parent)
        write_json(self.path, {"version": INDEX_VERSION, "steps": steps})

    def record(self, fingerprint: str, holder: Holder) -> None:
        """``holder`` has the files of the step ``fingerprint`` (replacing what it held before)."""
        holder = Holder(holder.root.resolve(), holder.shared.resolve(), holder.files)
        _replace(self.holders, fingerprint, holder)
        _replace(self._recorded, fingerprint, holder)

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


def _replace(holders: dict[str, list[Holder]], fingerprint: str, holder: Holder) -> None:
    others = [h for h in holders.get(fingerprint, []) if h.root != holder.root]
    holders[fingerprint] = [*others, holder]


def stamp_of(path: Path) -> FileStamp | None:
    """``path``'s size and modification time; None when it is not there."""
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


def reads_the_same(holder: Holder, run: RunLayout, inputs: Iterable[Path]) -> bool:
    """Whether each of ``inputs`` (artifacts of ``run`` that a step reads) is the very file the holder's
    step read, taken from it or from where it took it: a run that made an upstream step itself, even with
    the same fingerprint, may hold other bytes (training is not bit for bit repeatable everywhere)."""
    for path in inputs:
        theirs = _moved(
            path, [(run.proposals_folder, RunLayout(holder.shared).proposals_folder), (run.root, holder.root)]
        )
        try:
            if theirs is None or not os.path.samefile(path, theirs):
                return False
        except OSError:
            return False
    return True


def _moved(path: Path, places: Sequence[tuple[Path, Path]]) -> Path | None:
    """``path`` moved from the first folder of the pair of ``places`` that holds it to the second; the
    deeper folders first. None when no folder holds it."""
    found = Path(path).resolve()
    for old, new in sorted(
        ((a.resolve(), b.resolve()) for a, b in places), key=lambda pair: -len(pair[0].parts)
    ):
        if found.is_relative_to(old):
            return new / found.relative_to(old)
    return None


def take(holder: Holder, run: RunLayout) -> None:
    """Put ``holder``'s files into ``run``: each linked (copied where the file system cannot link), each
    manifest written anew for its place here."""
    places = [(RunLayout(holder.shared).proposals_folder, run.proposals_folder), (holder.root, run.root)]
    for name in holder.files:
        source, target = holder.root / name, run.root / name
        ensure_folder(target.parent)
        if name.endswith(MANIFEST_SUFFIX):
            move_manifest(source, target, places)
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


def move_manifest(source: Path, target: Path, places: Sequence[tuple[Path, Path]]) -> None:
    """The manifest ``source`` written to ``target`` with every path in a folder of ``places`` (the
    holder's -> this run's) moved to this run's; an input so moved is stamped as this run has it: the same
    file, as ``reads_the_same`` checked before the taking."""
    try:
        content = json.loads(source.read_text(encoding="utf-8"))
        content["location"] = str(_moved(content["location"], places) or content["location"])
        inputs = []
        for entry in content.get("inputs", []):
            path = _moved(entry["path"], places)
            if path is None:
                inputs.append(entry)
            else:  # this run's file; one it lacks makes the step run again, not read another run's
                inputs.append(describe_input(path) if path.exists() else {**entry, "path": str(path)})
        content["inputs"] = inputs
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{source}: unreadable manifest ({exc}); remake it, or remove {source.parent}"
        ) from None
    write_json(target, content)
