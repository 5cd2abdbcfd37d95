"""Training loops: SimpleMAE pretraining (and, in later modules, probes and distillation)."""

from fourds.train.config import PretrainConfig
from fourds.train.pretrain import NonFiniteLossError, pretrain

__all__ = ["NonFiniteLossError", "PretrainConfig", "pretrain"]
