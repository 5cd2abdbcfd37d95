"""Run logging on rank 0: a progress bar, TensorBoard scalars and a JSONL file of the same scalars."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class RunLogger:
    """Progress bar + ``<run>/metrics.jsonl`` + TensorBoard (``<run>/tb``); a no-op off rank 0.

    Args:
        run_dir: the run directory.
        total: total steps (for the bar).
        initial: first step (resumed runs start the bar there).
        enabled: False on non-zero ranks.
        tensorboard: write TensorBoard event files.
        desc: bar description.
    """

    def __init__(
        self, run_dir: str | Path, total: int, initial: int = 0, enabled: bool = True,
        tensorboard: bool = True, desc: str = "train",
    ) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._writer = None
        self._jsonl = None
        self._bar = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))
            except ImportError:  # tensorboard is a dependency, but keep logging if it is broken
                log.warning("tensorboard is not importable; scalars go to metrics.jsonl only")
        interactive = sys.stderr.isatty()
        self._bar = tqdm(
            total=total, initial=initial, desc=desc, dynamic_ncols=True,
            mininterval=0.5 if interactive else 10.0, disable=False,
        )

    def log(self, step: int, scalars: dict[str, float], bar: dict[str, str] | None = None) -> None:
        """Record ``scalars`` at ``step`` (JSONL + TensorBoard) and refresh the bar's postfix."""
        if not self.enabled:
            return
        record: dict[str, Any] = {"step": step, "time": time.time(), **scalars}
        self._jsonl.write(json.dumps(record) + "\n")  # type: ignore[union-attr]
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, value, step)
        if bar is not None and self._bar is not None:
            self._bar.set_postfix(bar, refresh=False)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def write(self, message: str) -> None:
        """Print a line without breaking the bar."""
        if self.enabled:
            tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
        if self._jsonl is not None:
            self._jsonl.close()
        self._bar = self._writer = self._jsonl = None
