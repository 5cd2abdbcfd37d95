"""The demo's recipe: scenes, the two tiny models and their pretraining, the probe protocol, the readouts.

Four presets, big_vision style (:data:`RECIPES`, ``fourds demo --recipe NAME``): :func:`quick_recipe`
(the pipeline shrunk for CI), :func:`default_recipe` (the README's main job, <= 15 min on 2 CPU cores),
:func:`long_recipe` (<= 60 min there) and :func:`gpu_recipe` (<= 5 min on one H100/H200-class GPU, the
default where CUDA is available). ``docs/demo.md`` gives each one's measured time and table, and what
mattered.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

TASKS = ("synth_tracking", "synth_boxes", "synth_pose", "synth_depth", "synth_motion")


@dataclass
class ModelRecipe:
    """One tiny SimpleMAE model and its pretraining.

    Attributes:
        label: the model's name in the results (``nano``, ``micro``).
        preset: registered size (``fourds.models.list_models()``).
        overrides: architecture / SimpleMAE overrides (``patch_size``, ``mask_ratio``, ...).
        steps, batch_size, lr, warmup_steps, weight_decay: pretraining schedule (AdamW, warm-up + cosine).
        beta2: AdamW beta2 (the paper's 0.95).
        min_resize, max_resize: pretraining clip zoom (short side to a factor in [min, max] x the frame,
            then a random crop), with a random flip.
    """

    label: str
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 30
    weight_decay: float = 0.05
    beta2: float = 0.95
    min_resize: float = 1.0
    max_resize: float | None = 1.25


@dataclass
class DemoRecipe:
    """Everything the demo does (sizes, steps, widths); see ``docs/demo.md``.

    Attributes:
        name: ``default`` or ``quick``.
        frames, size: clip length and square frame size of every scene (pretraining and probes).
        train_scenes, test_scenes: scenes in the pool's training and evaluation splits (rendered once).
        eval_split: the synthetic split the rows are scored on: ``test`` for the reported tables (read once),
            ``val`` while a recipe, a readout setting or a scene change is being tuned (``docs/demo.md``).
        num_tracks: point tracks per scene.
        scene_options: further ``SyntheticScenes`` options.
        models: the pretrained sizes, smallest first.
        random_init: also probe each architecture at random initialisation (its pretraining run's step-0
            weights).
        blank: also probe the readouts on constant features (the ``blank`` row, the largest model's token
            grid and width): with the trivial answer, each task's floor.
        perframe: labels of the pretrained models also probed per frame (each frame repeated to fill the
            tubelet, time stacked).
        tasks: the synthetic tasks.
        task_overrides: per task, overrides of its readout and protocol (widths: ``channels``,
            ``num_heads``, ``embed_dim``). Every task also gets ``augment=False`` and the scenes' clip size.
        layer_fraction: readout depth for every task (None: each task's own, 0.95 for 4D tasks, 0.75 for
            motion).
        probe_steps, probe_batch, probe_lr, probe_warmup: the frozen readouts' training.
        task_probe_steps: per task, readout steps other than ``probe_steps`` (its warm-up scaled alike).
        seeds: readout seeds (init, data order) per model x task; results are mean ± std over them.
        visualize: qualitative figures per task (seed 0 of the models in ``visualize_models``).
        visualize_models: labels of the probed models whose figures are drawn.
        reconstructions: test clips shown in the MAE reconstruction figure.
        distill: also distil the largest pretrained model into the smallest architecture and probe it.
        distill_steps, distill_batch, distill_lr: its schedule.
        feature_batch: clips per backbone pass when precomputing features.
        feature_memo: encode every pool clip once and serve all probe runs from that one pass
            (:class:`fourds.demo.FeatureMemo`, the CPU's choice); False runs the backbone on every probe batch
            on the device, under the recipe's precision (a GPU's choice: there the pass costs less than the
            memo's hashing and host copies).
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on the CPU), ``fp32`` or ``bf16``, for pretraining,
            distillation and the probes.
        render_workers: processes rendering the scenes (0: in the main process).
        workers: processes running the models' pretraining side by side and then one probed backbone each,
            with one torch thread each (:mod:`fourds.demo.parallel`; a CPU's choice: torch's second thread does
            not speed these tiny models up, a second process doubles the work done); 1: everything in the main
            process.
        threads: torch intra-op threads of the main process (0: leave torch's default).
    """

    name: str = "default"
    frames: int = 16
    size: int = 64
    train_scenes: int = 256
    test_scenes: int = 64
    eval_split: str = "test"
    num_tracks: int = 32
    scene_options: dict[str, Any] = field(default_factory=dict)
    models: list[ModelRecipe] = field(default_factory=list)
    random_init: bool = True
    blank: bool = True
    perframe: tuple[str, ...] = ()
    tasks: tuple[str, ...] = TASKS
    task_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    layer_fraction: float | None = None
    probe_steps: int = 120
    probe_batch: int = 16
    probe_lr: float = 3e-3
    probe_warmup: int = 12
    task_probe_steps: dict[str, int] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2)
    visualize: int = 2
    visualize_models: tuple[str, ...] = ()
    reconstructions: int = 3
    distill: bool = False
    distill_steps: int = 200
    distill_batch: int = 16
    distill_lr: float = 1e-3
    feature_batch: int = 16
    feature_memo: bool = True
    precision: str = "auto"
    render_workers: int = 2
    workers: int = 1
    threads: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def steps_for(self, task: str) -> tuple[int, int]:
        """(readout steps, warm-up steps) of ``task``."""
        steps = int(self.task_probe_steps.get(task, self.probe_steps))
        return steps, max(1, round(self.probe_warmup * steps / self.probe_steps))

    def model(self, label: str) -> ModelRecipe:
        for m in self.models:
            if m.label == label:
                return m
        raise ValueError(f"no model {label!r} in the recipe; models: {[m.label for m in self.models]}")

    def validate(self) -> None:
        from fourds.tasks import list_tasks

        if not self.models:
            raise ValueError("the recipe has no models")
        labels = [m.label for m in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"model labels must be distinct, got {labels}")
        for label in (*self.perframe, *self.visualize_models):
            if label not in labels and not label.startswith(tuple(labels)):
                raise ValueError(f"{label!r} is not a model of the recipe ({labels})")
        unknown = set(self.tasks) - set(list_tasks())
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; registered: {list_tasks()}")
        if len(self.seeds) < 3 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"give at least 3 distinct readout seeds (a row is mean ± std over them), got {list(self.seeds)}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1 (1: everything in the main process), got {self.workers}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.eval_split not in ("val", "test"):
            raise ValueError(f"eval_split must be 'val' (tuning) or 'test' (the reported tables), got {self.eval_split!r}")
        if self.train_scenes < 2 or self.test_scenes < 1:
            raise ValueError(f"need >= 2 training and >= 1 test scenes, got {self.train_scenes}, {self.test_scenes}")


# Readout widths: the paper's designs (Table 6) with the width C cut to fit the CPU budget (heads kept
# where C allows). The synthetic tasks' defaults are already a quarter of the paper's widths.
_READOUTS: dict[str, dict[str, Any]] = {
    # TAPIR's loss thresholds are pixels of a 256x256 frame (4 and 6 px); at 64x64 that is 1 and 1.5 px,
    # finer than these models can resolve in a few hundred steps, so every point would be "uncertain"
    # (predicted occluded) and the Average Jaccard 0. They are scaled to the demo's frame instead.
    #
    # Query points and boxes: at 64x64 the paper's top Fourier frequency (128 cycles per frame, one pixel of
    # a 256-pixel frame) is two cycles per pixel, a hash of the position that 256 scenes cannot teach a
    # readout to invert; 8 cycles per frame resolves 8 pixels. And with a few hundred steps a readout
    # does not learn to reproduce its query (the identity map through the Fourier MLP): box IoU 0.38-0.39
    # against 0.53 for "the first box in every frame". Predicting offsets from the query starts every
    # readout at "nothing moves" (box IoU 0.49, AJ 0.17; measured, docs/demo.md).
    # No query residual (the synthetic tasks' default, repeated here): docs/ladder.md.
    "synth_tracking": {"channels": 64, "num_heads": 4, "embed_dim": 64, "huber_delta": 16.0,
                       "uncertainty_threshold": 24.0, "query_max_frequency": 8.0, "predict_offsets": True,
                       "query_residual": False},
    "synth_boxes": {"channels": 64, "num_heads": 4, "embed_dim": 64, "query_max_frequency": 8.0,
                    "predict_offsets": True, "query_residual": False},
    "synth_pose": {"channels": 64, "num_heads": 8},
    # One query per 2x16x16 patch (128 queries at 16x64x64) instead of 2x8x8 (512): 4x cheaper.
    "synth_depth": {"channels": 64, "num_heads": 4, "patch_size": (2, 16, 16)},
    "synth_motion": {"channels": 64, "num_heads": 4},
}
# The scenes are rendered at the clip size, so the real-data protocol's zoom-then-crop is dropped: every
# task then reads the very same clip and one backbone pass serves all five (fourds.demo.features).
_NO_ZOOM = {"synth_pose": {"short_side_factor": 1.0}, "synth_depth": {"short_side_factor": 1.0},
            "synth_motion": {"short_side_factor": 1.0}}


def readout_settings() -> dict[str, dict[str, Any]]:
    """Every synthetic task's readout settings in the demo (widths, query options, no zoom), by task name."""
    return {t: {**_READOUTS.get(t, {}), **_NO_ZOOM.get(t, {})} for t in TASKS}


def default_recipe() -> DemoRecipe:
    """The README's main job on 2 CPU cores (its measured time and table: docs/demo.md).

    Settings from the measured search on the ``val`` split (docs/demo.md, "What mattered"): 75% masking
    (at 95% the 8x4x4 token grid keeps 6 visible tubelets and SimpleMAE stays on the mean-colour plateau),
    1,024 training scenes (with 256 every readout overfits and pose ends worse than its trivial answer),
    300 readout steps for pose and depth (the two tasks whose readouts are still improving there) and two
    worker processes (pretraining of the two sizes side by side, then one probed backbone per worker).
    """
    tiny = {"input_size": (16, 64, 64), "patch_size": (2, 16, 16), "mask_ratio": 0.75}
    return DemoRecipe(
        name="default",
        models=[
            ModelRecipe("nano", "4ds-nano", dict(tiny), steps=800, batch_size=16, lr=3e-3, warmup_steps=80),
            ModelRecipe("micro", "4ds-micro", dict(tiny), steps=300, batch_size=16, lr=2e-3, warmup_steps=30),
        ],
        train_scenes=1024,
        test_scenes=128,
        num_tracks=16,
        probe_steps=100,
        probe_warmup=10,
        perframe=("micro",),
        task_overrides=readout_settings(),
        task_probe_steps={"synth_pose": 300, "synth_depth": 300},
        visualize_models=("micro",),
        workers=2,
    )


def quick_recipe() -> DemoRecipe:
    """The same pipeline shrunk for CI (seconds on 2 CPU cores; docs/demo.md): few scenes, few steps."""
    tiny = {"input_size": (8, 32, 32), "patch_size": (2, 8, 8), "depth": 4, "decoder_patch_size": (2, 16, 16)}
    return DemoRecipe(
        name="quick",
        frames=8,
        size=32,
        train_scenes=16,
        test_scenes=8,
        num_tracks=16,
        models=[
            ModelRecipe("nano", "4ds-nano", {**tiny, "dim": 64, "num_heads": 2, "mlp_dim": 128}, steps=6, batch_size=4,
                        warmup_steps=2),
            ModelRecipe("micro", "4ds-micro", {**tiny, "dim": 96, "num_heads": 2, "mlp_dim": 192}, steps=6,
                        batch_size=4, warmup_steps=2),
        ],
        perframe=("micro",),
        task_overrides={t: {**o, "channels": 32, "num_heads": 2, **({"embed_dim": 32} if "embed_dim" in o else {})}
                        for t, o in readout_settings().items()},
        probe_steps=6,
        probe_batch=4,
        probe_warmup=2,
        visualize=1,
        visualize_models=("micro",),
        reconstructions=1,
        feature_batch=8,
        distill_steps=10,
        distill_batch=4,
    )


def long_recipe() -> DemoRecipe:
    """The hour-scale CPU demo (<= 60 min on 2 CPU cores; its measured time and table: docs/demo.md):
    the default recipe with twice the training scenes, 256 test scenes, 2x (nano) and 4x (micro) the
    pretraining steps, and 600-step pose and depth readouts (300 for the three others).

    Chosen from the ``val`` measurements of docs/demo.md: more training scenes are what moved pose
    (256 -> 1024 scenes), depth separates from its blank floor only at ~600 readout steps, and micro's
    features improve steadily with pretraining (600 steps still short of the floor at 300 readout steps).
    """
    recipe = default_recipe()
    recipe.name = "long"
    recipe.train_scenes = 2048
    recipe.test_scenes = 256
    nano, micro = recipe.models
    nano.steps, nano.warmup_steps = 1600, 160
    micro.steps, micro.warmup_steps = 1200, 120
    recipe.probe_steps, recipe.probe_warmup = 300, 30
    recipe.task_probe_steps = {"synth_pose": 600, "synth_depth": 600}
    return recipe


def gpu_recipe() -> DemoRecipe:
    """The GPU demo (<= 5 min on one H100/H200-class GPU; bf16): the issue-17 GPU run's scale — 2,048
    training / 256 test scenes, 2x8x8 tubelets, 3,000 pretraining steps x batch 128 for the larger model,
    400 readout steps x batch 64."""
    tiny = {"input_size": (16, 64, 64), "patch_size": (2, 8, 8)}
    return DemoRecipe(
        name="gpu",
        train_scenes=2048,
        test_scenes=256,
        num_tracks=16,
        models=[
            ModelRecipe("nano", "4ds-nano", dict(tiny), steps=3000, batch_size=128, lr=1e-3, warmup_steps=300),
            ModelRecipe("micro", "4ds-micro", dict(tiny), steps=3000, batch_size=128, lr=1e-3, warmup_steps=300),
        ],
        perframe=("micro",),
        task_overrides=readout_settings(),
        probe_steps=400,
        probe_batch=64,
        probe_warmup=40,
        visualize_models=("micro",),
        feature_batch=64,
        precision="auto",
        render_workers=8,
    )


#: The presets by name (``fourds demo --recipe NAME``).
RECIPES = {"quick": quick_recipe, "default": default_recipe, "long": long_recipe, "gpu": gpu_recipe}


def get_recipe(name: str) -> DemoRecipe:
    """The preset ``name`` (one of :data:`RECIPES`)."""
    if name not in RECIPES:
        raise ValueError(f"unknown demo recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]()


def default_recipe_name() -> str:
    """``gpu`` where CUDA is available, else ``default``."""
    import torch

    return "gpu" if torch.cuda.is_available() else "default"
