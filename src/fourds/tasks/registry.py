"""The task registry: tasks by name, built with validated overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

_TASKS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: register a task dataclass under its ``name``."""
    name = cls.name  # type: ignore[attr-defined]
    if name in _TASKS and _TASKS[name] is not cls:
        raise ValueError(f"task {name!r} is already registered by {_TASKS[name].__qualname__}")
    _TASKS[name] = cls
    return cls


def list_tasks() -> list[str]:
    """Registered task names: the six real tasks, then the synthetic ones."""
    return list(_TASKS)


def get_task(name: str, **overrides: Any) -> Any:
    """Build task ``name`` with ``overrides`` of its settings.

    Raises:
        ValueError: unknown task (naming the registered ones) or unknown override keys (naming the
            valid ones), or an invalid value.
    """
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; registered tasks: {', '.join(_TASKS)}")
    cls = _TASKS[name]
    valid = cls.option_names()  # type: ignore[attr-defined]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for task {name!r}; valid: {', '.join(valid)}")
    return cls(**overrides)


def load_readout_folder(folder: Path, config: dict[str, Any]) -> nn.Module:
    """Rebuild a probe readout folder (``config.json`` kind ``probe_readout``, written by
    :func:`fourds.probe.sweep.save_head`): the task named there, with its saved settings
    (``task_options``), builds its readout for width ``dim`` and token grid ``grid``; the weights of
    ``model.safetensors`` are loaded into it (strictly). The loader of that kind for
    :func:`fourds.models.load_module`."""
    from fourds.models.io import WEIGHTS_NAME, load_state_into

    task = get_task(config["task"], **config.get("task_options", {}))
    head = task.build_readout(config["dim"], tuple(config["grid"]))
    return load_state_into(head, Path(folder) / WEIGHTS_NAME)
