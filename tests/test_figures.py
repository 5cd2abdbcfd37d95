"""Figures a reader can read without the docs: legends for colours and markers, the trivial baseline
on the size plot, axes from zero, class names instead of numbers, only the kinds that have rows."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from fourds.demo import plots
from fourds.demo.report import kinds_text
from fourds.demo.results import Cell
from fourds.probe.visualize import boxes_legend, class_name, points_legend


def _cell(*values: float, direction: str = "higher", units: str = "fraction") -> Cell:
    return Cell("t/iou", direction, units, list(values))


@pytest.fixture
def captured(monkeypatch):
    """The figure a plot function would save, kept open for inspection."""
    figures = {}

    def keep(fig, path, title=None, dpi=110, fontsize=10, legend=None):
        figures[Path(path).name] = (fig, legend)
        return Path(path)

    monkeypatch.setattr(plots, "save_figure", keep)
    yield figures
    import matplotlib.pyplot as plt

    plt.close("all")


TABLE = {"nano": {"t": _cell(0.467, 0.468)}, "nano-random": {"t": _cell(0.466, 0.468)},
         "micro": {"t": _cell(0.469, 0.470)}, "trivial": {"t": _cell(0.489)}}
KINDS = {"nano": "pretrained", "nano-random": "random", "micro": "pretrained", "trivial": "no features"}
PARAMS = {"nano": 160_000, "nano-random": 160_000, "micro": 340_000}
RECIPE = SimpleNamespace(tasks=("t",))


def test_size_plot_draws_the_trivial_answer_as_a_line_on_an_axis_from_zero(captured, tmp_path):
    plots.plot_size(tmp_path, RECIPE, TABLE, PARAMS, KINDS)
    fig, legend = captured["metric_vs_size.png"]
    ax = fig.axes[0]
    flat = [line for line in ax.get_lines() if len(set(line.get_ydata())) == 1 and line.get_linestyle() == "--"]
    assert flat and flat[0].get_ydata()[0] == pytest.approx(48.9)  # percent units, the trivial value
    bottom, top = ax.get_ylim()
    assert bottom == 0 and top > 48.9  # not zoomed onto the 0.2-point gaps between the rows
    assert [h.get_label() for h in legend] == ["pretrained (SimpleMAE)", "random init", "no features (trivial answer)"]


def test_bar_plot_has_a_legend_of_the_kinds_present_only(captured, tmp_path):
    plots.plot_bars(tmp_path, RECIPE, TABLE, KINDS)
    fig, legend = captured["tasks_bars.png"]
    assert [h.get_label() for h in legend] == ["pretrained (SimpleMAE)", "random init", "no features (trivial answer)"]
    assert legend[-1].get_hatch() == "//"  # the hatched bar is the trivial answer
    assert fig.axes[0].get_ylim()[0] == 0


def test_honest_ylim_leaves_negative_metrics_alone():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [-2, 3])
    before = ax.get_ylim()
    plots.honest_ylim(ax, [-2.0, 3.0, math.nan])
    assert ax.get_ylim() == before
    plots.honest_ylim(ax, [0.5, 2.0])
    assert ax.get_ylim() == pytest.approx((0.0, 2.3))
    plt.close(fig)


def test_saved_figure_keeps_the_title_above_the_panels_and_the_legend_below(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(6, 4))
    for ax in axes.ravel():
        ax.set_title("column header")
    captured = {}
    real_close = plt.close
    plt.close = lambda f=None: captured.setdefault("fig", f)  # keep it open to measure
    try:
        plots.save_figure(fig, tmp_path / "f.png", "A figure title", legend=plots.kind_legend(["random"]))
    finally:
        plt.close = real_close
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    headers = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    assert all(title.y0 >= h.y1 for h in headers)  # no overlap (y grows upwards)
    legend = fig.legends[0].get_window_extent(renderer)
    assert all(legend.y1 <= ax.get_tightbbox(renderer).y0 + 1 for ax in fig.axes[2:])  # below the bottom row
    real_close(fig)
    assert (tmp_path / "f.png").is_file()


def test_track_and_box_legends_say_which_marker_is_which():
    assert [h.get_label() for h in points_legend(True)][:2] == ["true point (visible ones)",
                                                              "predicted point (predicted visible)"]
    assert points_legend(True)[0].get_marker() == "o" and points_legend(True)[1].get_marker() == "x"
    assert [h.get_linestyle() for h in boxes_legend(True)[:2]] == ["-", "--"]
    assert len(points_legend(False)) == 2 and len(boxes_legend(False)) == 2  # no prediction, no entry for it


def test_motion_pictures_name_the_direction():
    from fourds.tasks import get_task

    task = get_task("synth_motion")
    assert [class_name(task, c) for c in (0, 2, 5)] == ["right", "up", "down-left"]
    assert class_name(SimpleNamespace(name="ssv2", class_names=["push", "pull"]), 1) == "pull"
    assert class_name(SimpleNamespace(name="other"), 3) == "3"


def test_results_lists_only_the_kinds_that_have_rows():
    text = kinds_text({"pretrained", "random", "no features"})
    assert "`pretrained`" in text and "`random`" in text and "`no features`" in text
    assert "distilled" not in text and "perframe" not in text
