"""Import of the released 4DS checkpoints and the heads that come with them.

``backbone, heads = fourds.convert.from_official_npz("scaling4d_dist_b_depth.npz")``;
``convert_official(src, out_dir)`` writes a model folder (``fourds.models.load(out_dir)`` for the backbone,
:func:`load_heads` for ``heads/<name>/``).
"""

from fourds.convert.heads import VideoPatchReadout, load_heads, save_heads
from fourds.convert.npz import NpzReader
from fourds.convert.official import (
    OFFICIAL_READOUT_DEPTH,
    convert_official,
    detect_layout,
    from_official_npz,
    infer_readout_sizes,
    infer_vit_config,
    plan_official,
)

__all__ = [
    "OFFICIAL_READOUT_DEPTH",
    "NpzReader",
    "VideoPatchReadout",
    "convert_official",
    "detect_layout",
    "from_official_npz",
    "infer_readout_sizes",
    "infer_vit_config",
    "load_heads",
    "plan_official",
    "save_heads",
]
