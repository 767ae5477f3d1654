"""A study's published figures beside ours: the `study:` key of an experiment config, matched to job folders.

An experiment that reproduces a study (`conf/experiment/*.yaml`) declares what the study published:

    study:
      title: ...
      source: docs/studies.md, study 1
      columns:                      # what is compared; `ours`: where our figure is in a job folder
        best_val_acc: {label: best val acc, ours: [metrics.json, best, val/acc]}
      rows:                         # one per published configuration
        - {label: ResNet18, when: {model: resnet18}, published: {best_val_acc: 0.9404}}

`ours` is a path into `metrics.json` (keys, list indices) or `[classification_report.csv, <class>, <column>]`.
`when` selects the jobs a row compares with: each key is a config group choice of the job (`model`,
`optimizer`) or a dotted config key (`data.fold`); `{}` takes every job, null marks a row no config here
reproduces. Our figure of a row is the mean ± std over its jobs (seeds, folds), computed by the sweep
summary's `Group.stats`, the statistics of `summary.md`.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_resnet.sweeps.status import read_json
from lightning_resnet.sweeps.summary import Group, JobRow

SOURCES = ("metrics.json", "classification_report.csv")


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    ours: tuple[str | int, ...] | None  # None: no figure of ours (the study's alone, e.g. a Kaggle score)


@dataclass(frozen=True)
class Study:
    title: str
    source: str
    columns: tuple[Column, ...]
    rows: tuple[dict[str, Any], ...]


@dataclass
class Comparison:
    """One published row beside ours: `ours[key]` is (mean, std, n) or None; `jobs` are the matched jobs."""

    label: str
    published: dict[str, Any]
    ours: dict[str, tuple[float, float, int] | None]
    jobs: list[str]
    note: str = ""
    reproduced_here: bool = True  # False: `when: null`, no config of ours runs it


COLUMN_KEYS = ("label", "ours")
ROW_KEYS = ("label", "when", "published", "note")


def parse_study(node: Mapping[str, Any]) -> Study:
    """The `study:` node of a config, checked: errors name the key and the valid choices."""
    columns = []
    for key, spec in (node.get("columns") or {}).items():
        _only(spec, COLUMN_KEYS, f"study.columns.{key}")
        ours = spec.get("ours")
        if ours is not None and (not isinstance(ours, Sequence) or len(ours) < 2 or ours[0] not in SOURCES):
            raise ValueError(f"study.columns.{key}.ours={ours!r}: a list starting with one of {', '.join(SOURCES)}")
        columns.append(Column(str(key), str(spec.get("label", key)), tuple(ours) if ours is not None else None))
    rows = tuple(dict(row) for row in node.get("rows") or [])
    for index, row in enumerate(rows):
        _only(row, ROW_KEYS, f"study.rows[{index}]")
        unknown = set(row.get("published") or {}) - {c.key for c in columns}
        if unknown:
            raise ValueError(
                f"study.rows[{index}].published: {', '.join(sorted(unknown))} not among study.columns "
                f"({', '.join(c.key for c in columns)})"
            )
    return Study(str(node.get("title", "")), str(node.get("source", "")), tuple(columns), rows)


def _only(node: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    """A key a study node does not know (a typo, or a comma in an unquoted YAML flow mapping) is an error."""
    unknown = sorted(str(k) for k in node if k not in allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(unknown)}; valid: {', '.join(allowed)}")


def read_study(job_dir: Path) -> Study | None:
    """The study of the job's saved config (`.hydra/config.yaml`), or None when it has none."""
    node = _config(job_dir).get("study")
    return parse_study(node) if isinstance(node, Mapping) else None


def compare(study: Study, job_dirs: Sequence[Path], rows: Sequence[JobRow]) -> list[Comparison]:
    """Each published row with our mean ± std over the finished jobs its `when` selects."""
    by_name = {row.job: row for row in rows}
    keyed = [
        (job_dir, dataclasses.replace(by_name[job_dir.name], figures=_our_figures(study, job_dir)))
        for job_dir in job_dirs
        if job_dir.name in by_name
    ]
    comparisons = []
    for row in study.rows:
        when = row.get("when")
        matched = [job for job_dir, job in keyed if when is not None and _matches(job_dir, when)]
        group = Group(str(row.get("label", "")), matched)
        comparisons.append(
            Comparison(
                label=str(row.get("label", "")),
                published=dict(row.get("published") or {}),
                ours={c.key: group.stats(c.key) if c.ours is not None else None for c in study.columns},
                jobs=[job.job for job in matched],
                note=str(row.get("note") or ""),
                reproduced_here=when is not None,
            )
        )
    return comparisons


def _our_figures(study: Study, job_dir: Path) -> dict[str, float | None]:
    metrics = read_json(job_dir / "metrics.json") or {}
    report = _classification_report(job_dir / "classification_report.csv")
    figures: dict[str, float | None] = {}
    for column in study.columns:
        if column.ours is None:
            continue
        source, *path = column.ours
        value = _dig(metrics if source == "metrics.json" else report, path)
        figures[column.key] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return figures


def _dig(data: Any, path: Sequence[str | int]) -> Any:
    for key in path:
        if isinstance(data, Mapping):
            data = data.get(str(key))
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def _classification_report(path: Path) -> dict[str, dict[str, float]]:
    if not path.is_file():
        return {}
    with path.open(newline="") as file:
        return {
            row["class"]: {k: float(v) for k, v in row.items() if k != "class" and v not in ("", None)}
            for row in csv.DictReader(file)
        }


def _matches(job_dir: Path, when: Mapping[str, Any]) -> bool:
    choices = job_choices(job_dir)
    config = _config(job_dir)
    for key, wanted in when.items():
        value = choices[key] if key in choices else _dig(config, str(key).split("."))
        if str(value) != str(wanted):
            return False
    return True


def job_choices(job_dir: Path) -> dict[str, str]:
    """The job's config group choices (`model: resnet18`), from Hydra's `.hydra/hydra.yaml`."""
    path = job_dir / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    hydra = (yaml.safe_load(path.read_text()) or {}).get("hydra") or {}
    choices = (hydra.get("runtime") or {}).get("choices") or {}
    return {str(k): str(v) for k, v in choices.items() if v is not None}


def _config(job_dir: Path) -> dict[str, Any]:
    path = job_dir / ".hydra" / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
