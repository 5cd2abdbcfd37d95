"""The run logger's time estimate, on a fake clock: the first step (start-up) is not counted, the
estimate appears after the first few steps (or one slow step), is printed once, and stays in the bar."""

from __future__ import annotations

import logging

import pytest

from fourds.train.logger import Eta, RunLogger, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_step_is_not_counted_and_the_pace_is_the_mean_after_it():
    clock = FakeClock()
    eta = Eta(total=1000, clock=clock, min_steps=3)
    clock.now += 50.0  # the first step pays for start-up
    eta.update(1)
    assert eta.remaining() is None
    for step, dt in ((2, 2.0), (3, 4.0)):
        clock.now += dt
        eta.update(step)
        assert eta.remaining() is None  # 1 and 2 timed steps: not enough yet
    clock.now += 3.0
    eta.update(4)
    assert eta.seconds_per_step() == pytest.approx(3.0)  # (2 + 4 + 3) / 3, the 50 s left out
    assert eta.remaining() == pytest.approx(3.0 * 996)


def test_one_slow_step_is_enough_for_an_estimate():
    clock = FakeClock()
    eta = Eta(total=10, clock=clock, min_steps=3, min_seconds=30.0)
    clock.now += 5.0
    eta.update(1)
    clock.now += 40.0
    eta.update(2)
    assert eta.remaining() == pytest.approx(40.0 * 8)


def test_a_resumed_run_counts_from_its_start_step():
    clock = FakeClock()
    eta = Eta(total=40_000, initial=30_000, clock=clock, min_steps=2)
    for step in range(30_001, 30_004):
        clock.now += 0.5
        eta.update(step)
    assert eta.remaining() == pytest.approx(0.5 * (40_000 - 30_003))
    with pytest.raises(ValueError, match="starting at step 11: the start is past the end"):
        Eta(total=10, initial=11)


@pytest.mark.parametrize("seconds,text", [
    (0.4, "0 s"), (42.9, "42 s"), (200, "3 min 20 s"), (2 * 3600 + 5 * 60 + 59, "2 h 05 min"),
    (27.3 * 3600, "1 d 03 h"), (-5, "0 s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_run_logger_prints_the_step_count_then_the_estimate_once_and_keeps_it_in_the_bar(tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, logger="fourds.train.logger")
    clock = FakeClock()
    logger = RunLogger(tmp_path, total=40_000, tensorboard=False, desc="probe", clock=clock)
    for dt in (60.0, 2.0, 2.0, 2.0, 2.0, 2.0):
        clock.now += dt
        logger.advance()
        logger.log(logger.eta.step, {"loss": 1.0}, bar={"loss": "1.0000"})
    postfix = logger._bar.postfix
    logger.close()
    err = capsys.readouterr().err
    assert "probe: 40,000 steps (40,000 to go)" in err
    lines = [line for line in err.splitlines() if "to go for" in line]
    assert len(lines) == 1, err  # announced once, not at every step
    # After step 4 (3 timed steps of 2 s): 39,996 steps x 2 s = 22 h 13 min.
    assert "probe: 22 h 13 min to go for 39,996 more steps at 2 s/step" in lines[0]
    assert "loss=1.0000" in postfix and "eta=22 h 13 min" in postfix  # 39,994 x 2 s after step 6


def test_run_logger_is_quiet_when_its_logger_is_above_info(tmp_path, capsys):
    logging.getLogger("fourds.train").setLevel(logging.WARNING)  # what `fourds demo` does
    try:
        clock = FakeClock()
        logger = RunLogger(tmp_path, total=100, tensorboard=False, desc="quiet", clock=clock)
        for _ in range(5):
            clock.now += 1.0
            logger.advance()
        logger.close()
    finally:
        logging.getLogger("fourds.train").setLevel(logging.NOTSET)
    err = capsys.readouterr().err
    assert "to go" not in err and "quiet" in err  # the bar still shows, the lines do not


def test_a_run_with_seconds_left_prints_no_estimate_line(tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, logger="fourds.train.logger")
    clock = FakeClock()
    logger = RunLogger(tmp_path, total=20, tensorboard=False, desc="short", clock=clock)
    for _ in range(20):
        clock.now += 0.1  # 16 steps left at 0.1 s after step 4: under the 10 s threshold
        logger.advance()
    logger.close()
    err = capsys.readouterr().err
    assert "short: 20 steps (20 to go)" in err and "to go for" not in err


def test_a_resumed_run_says_where_it_starts(tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, logger="fourds.train.logger")
    RunLogger(tmp_path, total=500, initial=200, tensorboard=False, desc="pretrain").close()
    assert "pretrain: 500 steps from step 200 (300 to go)" in capsys.readouterr().err
