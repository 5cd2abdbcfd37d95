"""Tasks: the paper's six evaluation tasks and their synthetic versions, behind one contract.

``get_task(name, **overrides)`` builds a task by name with validated overrides; ``list_tasks()`` names
them. Each task (see :mod:`fourds.tasks.base`) gives the probe its readout, loss, metrics (with
direction and data-set reducer), label-aware train/eval transforms, evaluation clips and data.
``docs/tasks.md`` lists each task's readout, loss, metric, augmentation and sample format.
"""

# Importing a task module registers it; this order is the order of list_tasks() (the paper's).
from fourds.tasks import ssv2, k700, re10k, perception_test, waymo, scannet, synthetic  # noqa: F401, I001
from fourds.tasks.base import Task, TaskContract, count_readout_params, select_frames
from fourds.tasks.classification import ClassificationReadout, ClassificationTask
from fourds.tasks.k700 import K700Task
from fourds.tasks.perception_test import PerceptionTestTask, PointTrackReadout
from fourds.tasks.re10k import PoseReadout, RE10kTask, relative_pose
from fourds.tasks.registry import get_task, list_tasks, register
from fourds.tasks.scannet import DepthReadout, ScanNetTask
from fourds.tasks.ssv2 import SSv2Task
from fourds.tasks.waymo import BoxTrackReadout, WaymoTask
from fourds.tasks.synthetic import (
    SynthBoxesTask,
    SynthDepthTask,
    SynthMotionTask,
    SynthPoseTask,
    SynthTrackingTask,
)

TABLE6_PARAMS: dict[str, int] = {
    "ssv2": 7_041_966,
    "k700": 12_281_532,
    "re10k": 1_650_444,
    "scannet": 18_116_736,
    "waymo": 12_482_624,
    "perception_test": 12_396_552,
}
"""The paper's Table 6 readout parameter counts (1024-wide backbone, 16 frames, 224x224 / 256x256)."""

__all__ = [
    "TABLE6_PARAMS",
    "BoxTrackReadout",
    "ClassificationReadout",
    "ClassificationTask",
    "DepthReadout",
    "K700Task",
    "PerceptionTestTask",
    "PointTrackReadout",
    "PoseReadout",
    "RE10kTask",
    "SSv2Task",
    "ScanNetTask",
    "SynthBoxesTask",
    "SynthDepthTask",
    "SynthMotionTask",
    "SynthPoseTask",
    "SynthTrackingTask",
    "Task",
    "TaskContract",
    "WaymoTask",
    "count_readout_params",
    "get_task",
    "list_tasks",
    "register",
    "relative_pose",
    "select_frames",
]
