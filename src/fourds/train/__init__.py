"""Training: SimpleMAE pretraining and distillation, driven by one step loop (:mod:`fourds.train.trainer`)
that the probe protocol (:mod:`fourds.probe`) drives too."""

from fourds._moved import install
from fourds.train.config import PretrainConfig
from fourds.train.pretrain import pretrain
from fourds.train.trainer import NonFiniteLossError

install()  # moved modules' old paths (fourds.train.probe_loop, ...) import with a DeprecationWarning

__all__ = ["NonFiniteLossError", "PretrainConfig", "pretrain"]
