"""Diagnostics: the readout learnability ladder (:mod:`fourds.diagnostics.ladder`)."""

from fourds.diagnostics.ladder import LadderConfig, RungResult, markdown_table, run_ladder

__all__ = ["LadderConfig", "RungResult", "markdown_table", "run_ladder"]
