"""Validate a dataset copy on disk (``fourds data check ROOT --dataset NAME``).

For every split of the dataset (or the ones asked for): whether the split is there at all (and if not,
the layout error that says what is expected), how many items (videos / sequences / segments / scans)
and samples it has, the items the annotations list but the disk lacks, items left out with a reason,
the items that fail to open or decode (``quick``: only opened and indexed), frame totals, label
coverage for classification datasets (classes with at least one item, items without a label) and
skipped frames (ScanNet's invalid poses).
"""

from __future__ import annotations

from typing import Any

from fourds.data.datasets.base import DatasetLayoutError

SPLITS: dict[str, tuple[str, ...]] = {
    "ssv2": ("train", "validation", "test"),
    "k700": ("train", "val", "test"),
    "re10k": ("train", "test"),
    "perception_test": ("train", "valid", "test"),
    "tapvid_davis": ("test",),
    "tapvid_kinetics": ("test",),
    "movi_e": ("train", "validation", "test"),
    "waymo": ("training", "validation", "testing"),
    "scannet": ("train", "val", "test"),
}
ERRORS = (RuntimeError, OSError, ValueError)


def check_dataset(root: str, name: str, splits: list[str] | None = None, quick: bool = False, limit: int | None = None,
                  progress: bool = True, **options: Any) -> dict[str, dict[str, Any]]:
    """``{split: report}``; a report has ``present`` and then ``error`` (absent) or ``items``, ``samples``,
    ``missing``, ``skipped``, ``bad`` ({id: reason}), ``checked``, ``frames``, ``labels``, ``invalid_poses``."""
    from tqdm import tqdm

    from fourds.data.datasets import DATASETS, open_dataset

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
    out: dict[str, dict[str, Any]] = {}
    for split in splits or SPLITS[name]:
        try:
            ds = open_dataset(name, root, split, num_frames=1, stride=1, **options)
        except DatasetLayoutError as err:
            out[split] = {"present": False, "error": str(err)}
            continue
        except ValueError as err:
            out[split] = {"present": True, "error": str(err)}
            continue
        n = ds.num_items() if limit is None else min(limit, ds.num_items())
        bad: dict[str, str] = {}
        frames = 0
        invalid = 0
        for item in tqdm(range(n), desc=f"{name} {split}", unit="item", disable=not progress):
            try:
                frames += ds.check_item(item, quick=quick)
                if hasattr(ds, "invalid_poses"):
                    invalid += ds.invalid_poses(item)
            except ERRORS as err:
                bad[ds.item_id(item)] = f"{type(err).__name__}: {err}"
        report: dict[str, Any] = {
            "present": True, "items": ds.num_items(), "checked": n, "frames": frames, "bad": bad,
            "missing": list(getattr(ds, "missing", [])), "skipped": dict(getattr(ds, "skipped", {})),
        }
        if hasattr(ds, "invalid_poses"):
            report["invalid_poses"] = invalid
        if ds.num_classes:
            labels = [ds.label_of(i) for i in range(ds.num_items())]
            seen = {lab for lab in labels if lab is not None}
            names = list(getattr(ds, "class_names", [])) or [str(c) for c in range(ds.num_classes)]
            report["labels"] = {"num_classes": ds.num_classes, "covered": len(seen),
                                "unlabelled": sum(lab is None for lab in labels),
                                "uncovered": [names[c] for c in range(ds.num_classes) if c not in seen]}
        out[split] = report
    return out


def format_report(name: str, root: str, report: dict[str, dict[str, Any]], show: int = 10) -> list[str]:
    """Human-readable lines of :func:`check_dataset`'s report."""
    lines = [f"{name} at {root}"]
    for split, r in report.items():
        if not r["present"] or (r.get("error") and "items" not in r):
            first = r["error"].splitlines()[0]
            lines.append(f"  {split}: {'absent' if not r['present'] else 'error'} ({first})")
            continue
        ok = r["checked"] - len(r["bad"])
        line = f"  {split}: {r['items']} items, {ok} of {r['checked']} checked read ({r['frames']} frames)"
        if r["missing"]:
            line += f", {len(r['missing'])} listed but missing"
        if r["skipped"]:
            line += f", {len(r['skipped'])} left out"
        if r.get("invalid_poses"):
            line += f", {r['invalid_poses']} frames with invalid poses skipped"
        lines.append(line)
        if "labels" in r:
            lab = r["labels"]
            lines.append(f"    labels: {lab['covered']} of {lab['num_classes']} classes have items"
                         + (f", {lab['unlabelled']} items unlabelled" if lab["unlabelled"] else "")
                         + (f"; none for: {', '.join(lab['uncovered'][:show])}{' ...' if len(lab['uncovered']) > show else ''}"
                            if lab["uncovered"] and lab["covered"] else ""))
        for title, entries in (("missing", r["missing"]), ("left out", [f"{k} ({v})" for k, v in r["skipped"].items()]),
                               ("unreadable", [f"{k}: {v}" for k, v in r["bad"].items()])):
            if entries:
                lines.append(f"    {title}:")
                lines += [f"      {e}" for e in entries[:show]]
                if len(entries) > show:
                    lines.append(f"      ... and {len(entries) - show} more")
    return lines
