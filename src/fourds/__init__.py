"""fourds: 4D video representations in PyTorch.

SimpleMAE pretraining of the 4DS video ViT family, the paper's 4D evaluation suite with
cross-attention readouts, and import of the released 4DS checkpoints.
Conventions (pixels, points, boxes, cameras, poses, visibility, padding, layers): ``docs/conventions.md``.
"""

__version__ = "0.1.0"
