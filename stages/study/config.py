"""Study files: a paper's ablation table as runs of one config, each row a variant of it.

A study is a TOML file::

    [study]
    title = "Fast R-CNN: which layers to fine-tune"
    source = "Fast R-CNN (Girshick, ICCV 2015), section 4.5, Table 5: VGG16, VOC 2007 test"
    config = "../demo.toml"                 # the base run config, relative to this file
    set = ["run.methods=['fast']"]          # overrides of every variant (rcnn run --set's syntax)
    measure = "fast"                        # the evaluation each row reads: method[.variant]

    [[variant]]
    label = "fc6 and up"                    # the row's name
    set = ["fast.finetune.trainable_from=fc6"]
    paper = 0.614                           # the paper's mAP for this row (optional)
    # name = "fc6"                          # its folder DIR/<name>/ (default: from the label)
    # measure = "fast.svd"                  # another evaluation than the study's
    # box_regression = false                # the mAP without box regression

Each variant is the base config with the study's overrides, then its own, then the command line's
(``rcnn study --set``); it runs in ``DIR/<name>/`` without ``[detect]``'s pictures. A key that is not one
of these is an error naming the file and the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.config.run_config import RunConfig, load_config, read_toml
from stages.core.errors import UserError
from stages.methods import METHODS

_STUDY_KEYS = ("title", "source", "config", "set", "measure", "note")
_VARIANT_KEYS = ("label", "name", "set", "measure", "box_regression", "paper")


@dataclass(frozen=True)
class Measure:
    """The evaluation a row reads: ``method``'s variant ``variant`` (``stages.methods.base.Variant.key``;
    empty: its network as trained), with or without box regression."""

    method: str
    variant: str = ""
    box_regression: bool = True

    @classmethod
    def parse(cls, text: str, box_regression: bool = True) -> Measure:
        method, _, variant = text.partition(".")
        return cls(method, variant, box_regression)

    def __str__(self) -> str:
        text = f"{self.method}.{self.variant}" if self.variant else self.method
        return text if self.box_regression else f"{text} without box regression"


@dataclass(frozen=True)
class StudyVariant:
    """One row of a study: its ``label``, its folder ``name``, its overrides ``settings``, the evaluation
    it reads and the paper's mAP for it."""

    label: str
    name: str
    settings: tuple[str, ...]
    measure: Measure
    paper: float | None = None


@dataclass(frozen=True)
class Study:
    """A study read from ``path``: its title, where its paper figures come from, its base ``config`` and
    overrides of every variant (``settings``), its variants in the file's order, and a ``note``."""

    path: Path
    title: str
    source: str
    config: Path
    settings: tuple[str, ...]
    variants: tuple[StudyVariant, ...]
    note: str = ""

    def variant_config(
        self, variant: StudyVariant, folder: Path, data_root: str | None = None, settings: Sequence[str] = ()
    ) -> RunConfig:
        """The run config of ``variant`` in ``folder/<name>/``: the base config with the study's, the
        variant's and then ``settings`` overrides, without ``[detect]``; UserError naming the study for
        a bad override, and for a measured evaluation the run does not make."""
        overrides = [*self.settings, *variant.settings, *settings]
        try:
            config = load_config(
                self.config,
                overrides,
                data_root=data_root,
                run_folder=str(Path(folder) / variant.name),
                pictures=False,
            )
        except UserError as exc:
            raise UserError(f"{self.path}: variant {variant.label!r}: {exc}") from None
        _check_measure(self, variant, config)
        return config


def _check_measure(study: Study, variant: StudyVariant, config: RunConfig) -> None:
    measure = variant.measure
    where = f"{study.path}: variant {variant.label!r}: measure {str(measure)!r}"
    if measure.method not in config.methods:
        raise UserError(f"{where}: {measure.method!r} is not one of run.methods {list(config.methods)}")
    keys = [v.key for v in config.methods[measure.method].variants]
    if measure.variant not in keys:
        made = ", ".join(f"{measure.method}.{key}" if key else measure.method for key in keys)
        raise UserError(f"{where}: the run evaluates {made}")


def load_study(path: Path) -> Study:
    """Read the study at ``path``; UserError naming the file and the key for anything wrong in it."""
    path = Path(path)
    raw = read_toml(path, "study")
    _keys(raw, ("study", "variant"), path, "")
    head = raw.get("study")
    if not isinstance(head, dict):
        raise UserError(f"{path}: needs a [study] table with title and config")
    _keys(head, _STUDY_KEYS, path, "[study] ")
    config = Path(os.path.normpath(path.parent / _text(head, "config", path, "[study] ", required=True)))
    measure = _text(head, "measure", path, "[study] ") or next(iter(METHODS))
    rows = raw.get("variant")
    if not isinstance(rows, list) or len(rows) < 2:
        raise UserError(f"{path}: give at least two [[variant]] tables to compare")
    variants = tuple(_variant(row, index, measure, path) for index, row in enumerate(rows))
    names = [variant.name for variant in variants]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise UserError(f"{path}: variants named {repeated[0]!r} twice: give each a name of its own")
    return Study(
        path,
        _text(head, "title", path, "[study] ", required=True),
        _text(head, "source", path, "[study] "),
        config,
        _settings(head, path, "[study] "),
        variants,
        _text(head, "note", path, "[study] "),
    )


def _variant(row: Any, index: int, measure: str, path: Path) -> StudyVariant:
    where = f"[[variant]] {index + 1}: "
    if not isinstance(row, dict):
        raise UserError(f"{path}: {where}must be a table")
    _keys(row, _VARIANT_KEYS, path, where)
    label = _text(row, "label", path, where, required=True)
    name = _text(row, "name", path, where) or _folder_name(label)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"{path}: {where}name {name!r}: letters, digits, '.', '_' and '-' only")
    box_regression = row.get("box_regression", True)
    if not isinstance(box_regression, bool):
        raise UserError(f"{path}: {where}box_regression: expected true or false, got {box_regression!r}")
    paper = row.get("paper")
    if paper is not None and (
        isinstance(paper, bool) or not isinstance(paper, (int, float)) or not 0 <= paper <= 1
    ):
        raise UserError(f"{path}: {where}paper: expected an mAP between 0 and 1, got {paper!r}")
    chosen = Measure.parse(_text(row, "measure", path, where) or measure, box_regression)
    return StudyVariant(
        label, name, _settings(row, path, where), chosen, None if paper is None else float(paper)
    )


def _folder_name(label: str) -> str:
    """A folder name from a row's label: ``conv3_1 and up`` -> ``conv3_1-and-up``."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", label).strip("-.").lower() or "variant"


def _keys(raw: Mapping[str, Any], allowed: Sequence[str], path: Path, where: str) -> None:
    for key in raw:
        if key not in allowed:
            raise UserError(f"{path}: {where}{key}: not a key; choose among {', '.join(allowed)}")


def _text(raw: Mapping[str, Any], key: str, path: Path, where: str, required: bool = False) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise UserError(f"{path}: {where}{key}: expected text, got {value!r}")
    return value


def _settings(raw: Mapping[str, Any], path: Path, where: str) -> tuple[str, ...]:
    value = raw.get("set", [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise UserError(f'{path}: {where}set: expected a list of "table.key=value" texts, got {value!r}')
    return tuple(value)
