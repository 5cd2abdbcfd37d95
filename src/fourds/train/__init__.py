"""Training: SimpleMAE pretraining, distillation and the probe protocol, driven by one step loop
(:mod:`fourds.train.trainer`)."""

from fourds.train.config import PretrainConfig
from fourds.train.pretrain import pretrain
from fourds.train.trainer import NonFiniteLossError

__all__ = ["NonFiniteLossError", "PretrainConfig", "pretrain"]
