"""Run configs: one TOML file that says every option of every stage ``rcnn run`` runs.

A config's tables are the stages' own options dataclasses, key for key::

    [data]                 root, format, train, test, classes, skip_bad      (DataSettings)
    [run]                  folder, methods, device, replica (--seeds)         (RunSettings)
    [propose]              selective search                                   (ProposalOptions)
    [pretrain]             present: pre-train the backbone first              (PretrainOptions)
    [<method>.<table>]     each method of run.methods: its tables (``Method.tables``), in its order:
      finetune             every method: its fine-tuning                      (method.finetune_options_type)
      features, svm, bbox  R-CNN, SPP-net: the feature cache, SVMs, box regressors
      compress             present: Fast R-CNN's truncated-SVD model too      (method.compress_options_type)
    [<method>.paper]       the paper's figures for this setting, for the report (PaperFigures); those of
                           a variant in its table: [<method>.compress.paper] for the compressed model
    [evaluate]             metric, precision, similar                         (EvaluateSettings)
    [detect]               present: draw detections on the test split's first images (DetectSettings)

A key left out takes the stage's default (the paper's setting); a key that is no option is an error that
names the file, the table and the key. ``[run] device`` is every stage's device unless its table sets
one. Relative paths are relative to the working directory. ``resolved_toml`` writes the whole resolved
config back, so that a run folder records how it was made.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import tomli_w

from stages.core.errors import UserError
from stages.evaluation.metrics import METRICS
from stages.methods import METHODS
from stages.methods.base import Method, Variant
from stages.networks.options import check_precision
from stages.proposals.options import ProposalOptions
from stages.runs.layout import RunLayout
from stages.training.options import PretrainOptions


@dataclass(frozen=True)
class DataSettings:
    """The dataset: its root (VOC, COCO or YOLO layout, found from its files unless ``format``), the
    training and test splits, the classes (default: the dataset's), and whether to skip unreadable
    images and annotations."""

    root: str = "data/demo"
    format: str | None = None
    train: str = "trainval"
    test: str = "test"
    classes: tuple[str, ...] | None = None
    skip_bad: bool = False


@dataclass(frozen=True)
class RunSettings:
    """The run folder, the methods to train and test in the lineage's order, and every stage's device;
    ``replica`` k > 0 for the run trained again with every training seed + k (``rcnn run --seeds``), in
    ``<folder>/seeds/<k>/`` on the proposals of ``folder``."""

    folder: str = "runs/default"
    methods: tuple[str, ...] = tuple(METHODS)
    device: str = "auto"
    replica: int = 0

    def __post_init__(self) -> None:
        unknown = [name for name in self.methods if name not in METHODS]
        if unknown or not self.methods:
            raise UserError(f"methods {list(self.methods)}: choose among {', '.join(METHODS)}")
        if self.replica < 0:
            raise UserError(f"replica {self.replica}: give 0 (the run) or a positive seed offset")

    @property
    def layout(self) -> RunLayout:
        """Where the run's artifacts go (a replica's: ``RunLayout.replica``)."""
        return RunLayout(Path(self.folder)).replica(self.replica)


@dataclass(frozen=True)
class PaperFigures:
    """What a paper reports for the setting a config reproduces; the report prints it beside what was
    measured. ``source`` says where (paper, table, backbone, data)."""

    map: float | None = None
    map_without_box_regression: float | None = None
    test_seconds_per_image: float | None = None
    training_hours: float | None = None
    source: str = ""


@dataclass(frozen=True)
class EvaluateSettings:
    """``metric``: voc07, voc10 or coco (default: coco for COCO datasets, voc07 otherwise);
    ``precision``: of the networks run at evaluation (``stages.networks.precision``); ``similar``: groups
    of classes whose confusions the error diagnosis counts as similar (``stages.evaluation.diagnosis``;
    default: VOC's groups or COCO's supercategories where the dataset has them)."""

    metric: str | None = None
    precision: str = "fp32"
    similar: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.metric is not None and self.metric not in METRICS:
            raise UserError(f"metric {self.metric!r}: choose one of {', '.join(METRICS)}")


@dataclass(frozen=True)
class DetectSettings:
    """``rcnn detect`` on the test split's first ``images`` images with ``method`` (its compressed model
    with ``compressed``, its network in ``precision``); their pictures side by side in
    ``RUN/<method>/detect/grid.png``."""

    method: str = "fast"
    images: int = 4
    score_thresh: float | None = None
    compressed: bool = False
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.method not in METHODS:
            raise UserError(f"method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.images < 1:
            raise UserError(f"images {self.images}: give at least 1")


@dataclass(frozen=True)
class MethodSettings:
    """One method's part of a config: its tables' options (name -> options, in the method's order; an
    optional table only when given), the variants of its network to test, and the paper's figures of
    each (variant key -> figures)."""

    tables: Mapping[str, Any]
    variants: tuple[Variant, ...]
    papers: Mapping[str, PaperFigures] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    """A whole run, resolved: every stage's options. ``source`` is the file it was read from."""

    data: DataSettings
    run: RunSettings
    propose: ProposalOptions
    pretrain: PretrainOptions | None
    methods: Mapping[str, MethodSettings]
    evaluate: EvaluateSettings
    detect: DetectSettings | None
    source: Path = field(default=Path("config.toml"), compare=False)

    def method_objects(self) -> list[Method[Any]]:
        """The methods to run, in the lineage's order."""
        return [METHODS[name] for name in self.methods]

    def replica(self, offset: int) -> RunConfig:
        """This config trained again with every training seed + ``offset`` (pre-training's and each
        method's), in the replica's folder (``RunSettings.layout``), reading this run's proposals (their
        options unchanged), without ``[detect]``'s pictures; this config for 0."""
        if offset == 0:
            return self
        methods = {
            name: dataclasses.replace(
                settings, tables={key: _reseeded(options, offset) for key, options in settings.tables.items()}
            )
            for name, settings in self.methods.items()
        }
        return dataclasses.replace(
            self,
            run=dataclasses.replace(self.run, replica=self.run.replica + offset),
            pretrain=None if self.pretrain is None else _reseeded(self.pretrain, offset),
            methods=methods,
            detect=None,
        )


def _reseeded(options: Any, offset: int) -> Any:
    """``options`` (a dataclass, nested ones included) with every ``seed`` field + ``offset``."""
    changes = {}
    for item in fields(options):
        value = getattr(options, item.name)
        if item.name == "seed":
            changes["seed"] = value + offset
        elif is_dataclass(value) and not isinstance(value, type):
            changes[item.name] = _reseeded(value, offset)
    return dataclasses.replace(options, **changes)


_SHARED_TABLES = ("data", "run", "propose", "pretrain", "evaluate", "detect")


def load_config(
    path: Path,
    overrides: Sequence[str] = (),
    *,
    data_root: str | None = None,
    run_folder: str | None = None,
    classes: Sequence[str] | None = None,
    pictures: bool = True,
) -> RunConfig:
    """Read the TOML config at ``path``; ``overrides`` are ``table.key=value`` settings (values in TOML
    syntax, or plain text for strings) applied on top; ``data_root``, ``run_folder`` and ``classes`` set
    ``[data] root``, ``[run] folder`` and ``[data] classes``; without ``pictures``, ``[detect]`` is left
    out. Any unknown key, wrong type or invalid value is a UserError naming the file and the key."""
    path = Path(path)
    raw = read_toml(path)
    for override in overrides:
        _apply_override(raw, override)
    if data_root:
        raw.setdefault("data", {})["root"] = data_root
    if run_folder:
        raw.setdefault("run", {})["folder"] = run_folder
    if classes:
        raw.setdefault("data", {})["classes"] = list(classes)
    if not pictures:
        raw.pop("detect", None)
    return _resolve(raw, path)


def read_toml(path: Path, kind: str = "config") -> dict[str, Any]:
    """The TOML file at ``path`` (a ``kind`` file: a config, a study); UserError naming it when it is
    missing, unreadable or not TOML."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such {kind} file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None


def _apply_override(raw: dict, override: str) -> None:
    key, sep, text = override.partition("=")
    keys = key.strip().split(".")
    if not sep or not all(keys):
        raise UserError(f"--set {override!r}: give table.key=value, e.g. fast.finetune.iterations=2000")
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        value = text  # plain text: a string
    table = raw
    for name in keys[:-1]:
        table = table.setdefault(name, {})
        if not isinstance(table, dict):
            raise UserError(f"--set {override!r}: {name} is not a table")
    table[keys[-1]] = value


def _resolve(raw: Mapping[str, Any], path: Path) -> RunConfig:
    _check_keys(raw, (*_SHARED_TABLES, *METHODS), path, "")
    run = _options(RunSettings, raw.get("run", {}), path, "run")
    device = {"device": run.device}
    methods = {}
    for name in run.methods:
        methods[name] = _method_settings(METHODS[name], raw.get(name, {}), path, device)
    detect = _options(DetectSettings, raw["detect"], path, "detect") if "detect" in raw else None
    if detect is not None and detect.method not in run.methods:
        raise UserError(f"{path}: [detect] method {detect.method!r} is not one of run.methods")
    return RunConfig(
        data=_options(DataSettings, raw.get("data", {}), path, "data"),
        run=run,
        propose=_options(ProposalOptions, raw.get("propose", {}), path, "propose"),
        pretrain=(
            _options(PretrainOptions, raw["pretrain"], path, "pretrain", device)
            if "pretrain" in raw
            else None
        ),
        methods=methods,
        evaluate=_options(EvaluateSettings, raw.get("evaluate", {}), path, "evaluate"),
        detect=detect,
        source=path,
    )


def _method_settings(
    method: Method[Any], raw: Mapping[str, Any], path: Path, device: Mapping[str, str]
) -> MethodSettings:
    name = method.name
    _check_keys(raw, [*(table.name for table in method.tables), "paper"], path, name)
    tables: dict[str, Any] = {}
    papers: dict[str, PaperFigures] = {}
    for table in method.tables:
        if table.optional and table.name not in raw:
            continue
        given = raw.get(table.name, {})
        given = dict(given) if isinstance(given, dict) else given
        asks_for = [v for v in method.variants if v.table == table.name]
        paper = given.pop("paper", None) if asks_for and isinstance(given, dict) else None
        where = f"{name}.{table.name}"
        tables[table.name] = _options(table.options_type, given, path, where, device)
        if paper is not None:
            papers[asks_for[0].key] = _options(PaperFigures, paper, path, f"{where}.paper")
    if "paper" in raw:
        papers[""] = _options(PaperFigures, raw["paper"], path, f"{name}.paper")
    variants = tuple(v for v in method.variants if not v.table or v.table in tables)
    return MethodSettings(tables, variants, papers)


def _check_keys(raw: Any, allowed: Sequence[str], path: Path, table: str) -> None:
    where = f"[{table}] " if table else ""
    if not isinstance(raw, dict):
        raise UserError(f"{path}: [{table}] must be a table")
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; choose among {', '.join(allowed)}"
            raise UserError(f"{path}: {where}{key}: not an option{hint}")


def _options(
    options_type: type, raw: Any, path: Path, table: str, defaults: Mapping[str, Any] | None = None
) -> Any:
    """``options_type`` from the TOML table ``raw``: keys checked, values checked against the field
    types (lists become tuples, tables nested dataclasses); ``defaults`` fill fields the table leaves
    out."""
    hints = typing.get_type_hints(options_type)
    names = [f.name for f in fields(options_type) if f.init]
    _check_keys(raw, names, path, table)
    values = {k: v for k, v in (defaults or {}).items() if k in names}
    for key, value in raw.items():
        values[key] = _value(value, hints[key], path, f"{table}.{key}")
    try:
        return options_type(**values)
    except UserError as exc:
        raise UserError(f"{path}: [{table}] {exc}") from None


def _value(value: Any, kind: Any, path: Path, key: str) -> Any:
    """``value`` as the field type ``kind`` wants it; UserError saying what was expected otherwise."""
    if is_dataclass(kind) and isinstance(kind, type):
        return _options(kind, value, path, key)
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        choices = [a for a in arguments if a is not type(None)]
        return _value(value, choices[0], path, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise UserError(f"{path}: {key}: expected a list, got {value!r}")
        item = arguments[0]
        if (len(arguments) == 2 and arguments[1] is not Ellipsis) or len(arguments) > 2:
            if len(value) != len(arguments):
                raise UserError(f"{path}: {key}: expected {len(arguments)} values, got {value!r}")
            return tuple(_value(v, a, path, key) for v, a in zip(value, arguments, strict=True))
        return tuple(_value(v, item, path, key) for v in value)
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(kind)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise UserError(f"{path}: {key}: expected {expected}, got {value!r}")
    return value


def resolved_toml(config: RunConfig, header: str = "") -> str:
    """The whole resolved ``config`` as TOML (options at their defaults included; unset ones left out),
    readable by ``load_config`` into an equal config."""
    document: dict[str, Any] = {
        "data": _plain(config.data),
        "run": _plain(config.run),
        "propose": _plain(config.propose),
    }
    if config.pretrain is not None:
        document["pretrain"] = _plain(config.pretrain)
    for name, settings in config.methods.items():
        tables = {key: _plain(options) for key, options in settings.tables.items()}
        if "" in settings.papers:
            tables["paper"] = _plain(settings.papers[""])
        for variant in settings.variants:
            if variant.key in settings.papers and variant.table:
                tables[variant.table]["paper"] = _plain(settings.papers[variant.key])
        document[name] = tables
    document["evaluate"] = _plain(config.evaluate)
    if config.detect is not None:
        document["detect"] = _plain(config.detect)
    return header + tomli_w.dumps(document)


def _plain(options: Any) -> dict[str, Any]:
    """A dataclass as TOML values: tuples as lists, None left out (unset: the default)."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items() if v is not None}
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        return value

    return convert(dataclasses.asdict(options))
