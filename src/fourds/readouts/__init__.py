"""Readouts: attention readout heads on frozen features (and the dense patch readout), query embeddings,
and temporal resampling."""

from fourds.readouts.attention import AttentionReadout, ReadoutMLP
from fourds.readouts.patch import PatchReadout
from fourds.readouts.fourier import FourierQueryEmbedding, fourier_features, fourier_frequencies
from fourds.readouts.resample import resample_time, resize_weights

__all__ = [
    "AttentionReadout",
    "FourierQueryEmbedding",
    "PatchReadout",
    "ReadoutMLP",
    "fourier_features",
    "fourier_frequencies",
    "resample_time",
    "resize_weights",
]
