"""Readouts: attention readout heads on frozen features, and the temporal resampling they share."""

from fourds.readouts.resample import resample_time, resize_weights

__all__ = ["resample_time", "resize_weights"]
