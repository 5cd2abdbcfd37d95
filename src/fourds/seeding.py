"""Deterministic seeds derived from several integers or strings, stable across processes and runs."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(*values: int | str) -> int:
    """A well-mixed 63-bit seed from integers and strings (NumPy's SeedSequence; strings via SHA-256)."""
    ints = []
    for v in values:
        if isinstance(v, str):
            ints.append(int.from_bytes(hashlib.sha256(v.encode()).digest()[:8], "little"))
        else:
            ints.append(int(v) & 0xFFFF_FFFF_FFFF_FFFF)
    state = np.random.SeedSequence(ints).generate_state(2, np.uint64)
    return int(((int(state[0]) << 32) ^ int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF)


def generator(*values: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``values``."""
    return torch.Generator().manual_seed(derive_seed(*values))
