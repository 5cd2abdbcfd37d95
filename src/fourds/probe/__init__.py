"""The probe protocol: a frozen readout sweep on one backbone pass, or finetuning, evaluated and selected
on a validation split (:func:`run_probe`), and the tables and figures of finished runs (:func:`write_report`).

Modules: :mod:`~fourds.probe.protocol` (``run_probe``, the finetuned runs), :mod:`~fourds.probe.sweep`
(the K readouts and the head trainer), :mod:`~fourds.probe.data`, :mod:`~fourds.probe.evaluate`
(evaluation and selection), :mod:`~fourds.probe.metrics`, :mod:`~fourds.probe.cache` (frozen features on
disk), :mod:`~fourds.probe.config`, :mod:`~fourds.probe.visualize`, :mod:`~fourds.probe.report`.
"""

from fourds.probe.config import ProbeConfig
from fourds.probe.protocol import run_probe
from fourds.probe.report import write_report

__all__ = ["ProbeConfig", "run_probe", "write_report"]
