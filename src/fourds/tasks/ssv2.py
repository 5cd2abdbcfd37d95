"""Something-Something v2 action classification (paper Appendix A.2.1).

16 frames at stride 2, 224x224; readout 768 channels, 12 heads, one learned query, 174 classes
(7,041,966 parameters on a 1024-wide backbone, Table 6); frozen readout at 75% depth, finetuned at 95%.
Training: short side to 239, random 224 crop, colour augmentation (Table 7) and grayscale; evaluation:
one centred clip, one central 224 crop. Metric: top-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fourds.tasks.classification import ClassificationTask
from fourds.tasks.registry import register


@register
@dataclass
class SSv2Task(ClassificationTask):
    """SSv2 (see the module docstring); every field is an override of ``get_task("ssv2", ...)``."""

    name: ClassVar[str] = "ssv2"
    data_sources: ClassVar[dict[str, str]] = {"train": "ssv2", "eval": "ssv2"}

    channels: int = 768
    num_heads: int = 12
    num_classes: int = 174
    layer_fraction: float = 0.75
    finetune_layer_fraction: float | None = 0.95
