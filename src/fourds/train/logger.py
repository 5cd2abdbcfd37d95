"""Run logging on rank 0: a progress bar, TensorBoard scalars, a JSONL file of the same scalars, and
time estimates: every run says how many steps it will take when it starts, and once its first steps
are done, how long the rest will take (:class:`Eta`; the bar keeps the estimate up to date)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``2 h 05 min``, ``3 d 04 h``: two units at most, rounded down."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


#: The estimate is printed only when at least this many seconds are left (the bar always shows it).
ANNOUNCE_MIN_S = 10.0


class Eta:
    """Estimated time to the end of a run of ``total`` steps from the pace of the steps done so far.

    The clock starts when the first step of this process ends, not when the run starts: that step also
    pays for start-up (data workers, allocations, compilation), so the pace is measured from the
    second step on. An estimate exists once ``min_steps`` steps have been timed that way, or one step
    that took ``min_seconds`` or more (slow runs should not wait long for their first estimate).

    Args:
        total: the run's last step.
        initial: the step the run starts at (resumed runs: the checkpoint's).
        clock: seconds, monotonic (``time.monotonic``; tests pass a fake).
        min_steps: timed steps before the first estimate.
        min_seconds: or timed seconds before the first estimate.
    """

    def __init__(self, total: int, initial: int = 0, clock: Callable[[], float] = time.monotonic,
                 min_steps: int = 3, min_seconds: float = 30.0) -> None:
        if total < initial:
            raise ValueError(f"run of {total} steps starting at step {initial}: the start is past the end")
        self.total, self.initial = int(total), int(initial)
        self.clock = clock
        self.min_steps, self.min_seconds = int(min_steps), float(min_seconds)
        self.step = self.initial
        self._ref: tuple[int, float] | None = None  # (step, time) when the first step ended
        self._now = 0.0

    def update(self, step: int) -> None:
        """Step ``step`` has just ended."""
        self.step = int(step)
        self._now = self.clock()
        if self._ref is None:
            self._ref = (self.step, self._now)

    def seconds_per_step(self) -> float | None:
        """The mean time of a step since the first one ended; None until enough steps are timed."""
        if self._ref is None:
            return None
        steps, elapsed = self.step - self._ref[0], self._now - self._ref[1]
        if steps < 1 or (steps < self.min_steps and elapsed < self.min_seconds):
            return None
        return elapsed / steps

    def remaining(self) -> float | None:
        """Seconds to step ``total`` at the measured pace (training steps only: the evaluation after it
        is not counted); None until known."""
        pace = self.seconds_per_step()
        return None if pace is None else pace * (self.total - self.step)


class RunLogger:
    """Progress bar + ``<run>/metrics.jsonl`` + TensorBoard (``<run>/tb``); a no-op off rank 0.

    Args:
        run_dir: the run directory.
        total: total steps (for the bar).
        initial: first step (resumed runs start the bar there).
        enabled: False on non-zero ranks.
        tensorboard: write TensorBoard event files.
        desc: bar description.
        clock: monotonic seconds for the time estimate (tests pass a fake).

    At start it prints ``<desc>: N steps`` (and where a resumed run starts); once the pace is known
    (:class:`Eta`) it prints the estimated time to the end once, and keeps an ``eta`` in the bar's postfix.
    These lines go through the module's logger at INFO (shown by the ``fourds`` command; the demo,
    which runs many short loops, raises ``fourds.train`` to WARNING and keeps them quiet).
    """

    def __init__(
        self, run_dir: str | Path, total: int, initial: int = 0, enabled: bool = True,
        tensorboard: bool = True, desc: str = "train", clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.desc = desc
        self._writer = None
        self._jsonl = None
        self._bar = None
        self.eta = Eta(total, initial, clock=clock)
        self._announced = False
        self._postfix: dict[str, str] = {}
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
        # tqdm's own remaining time is left out of the bar: it counts the start-up in the first step.
        self._bar = tqdm(
            total=total, initial=initial, desc=desc, dynamic_ncols=True,
            mininterval=0.5 if interactive else 10.0, disable=False,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]",
        )
        start = f" from step {initial:,}" if initial else ""
        self.info(f"{desc}: {total:,} steps{start} ({max(total - initial, 0):,} to go)")

    def info(self, message: str) -> None:
        """Print ``message`` without breaking the bar when this module logs at INFO."""
        if self.enabled and log.isEnabledFor(logging.INFO):
            self.write(message)

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
            self._postfix = dict(bar)
            self._show_postfix()

    def _show_postfix(self) -> None:
        remaining = self.eta.remaining()
        extra = {} if remaining is None else {"eta": format_duration(remaining)}
        self._bar.set_postfix({**self._postfix, **extra}, refresh=False)  # type: ignore[union-attr]

    def advance(self, n: int = 1) -> None:
        """``n`` more steps are done: move the bar, update the estimate, announce it once when known."""
        self.eta.update(self.eta.step + n)
        if self._bar is None:
            return
        self._bar.update(n)
        remaining = self.eta.remaining()
        if remaining is None:
            return
        first, self._announced = not self._announced, True
        if first and remaining >= ANNOUNCE_MIN_S:  # once; a run with seconds left needs no line
            pace = self.eta.seconds_per_step()
            self.info(f"{self.desc}: {format_duration(remaining)} to go for {self.eta.total - self.eta.step:,} "
                      f"more steps at {pace:.3g} s/step (training steps only, estimated from the steps so far)")
        self._show_postfix()

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
