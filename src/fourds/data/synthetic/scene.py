"""The procedural scene model (in the spirit of Kubric MOVi): what a clip shows and how it moves.

World: z up, metres. A textured ground plane z = 0 and a textured backdrop sphere of radius
``backdrop_radius`` centred at the origin enclose the scene. ``3..10`` objects (spheres and boxes) rest
on the ground inside a disc around the origin; some are static, the others slide on straight lines at
constant velocity, some of them also spinning at a constant rate (spheres about a random axis, boxes
about the vertical). Object 0 is the *main object*: the largest, near the centre, always moving; the
clip's ``label`` is its direction of motion (see :func:`sample_scene`).

The camera (the MOVi camera) moves on a straight line at constant velocity, always looks at a fixed
target near the origin, has no roll and a random horizontal field of view. One directional light with
an ambient term shades the surfaces (Lambertian), with cast shadows.

Time: frame ``t`` of a ``T``-frame clip is at ``tau = t / (T - 1)`` of the clip; the sampled
displacements are per clip, so a 32-frame clip shows the same motion as a 16-frame one, sampled twice
as finely. Trajectories are centred on the clip (an object is at its sampled position at ``tau = 1/2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fourds.data.synthetic.camera import intrinsics_from_fov, look_at
from fourds.data.synthetic.textures import TextureBank, sample_textures

SPHERE, BOX = 0, 1
SHAPES = ("sphere", "box")


@dataclass(frozen=True)
class SceneConfig:
    """Ranges of the scene sampler (metres, degrees, per-clip displacements). Defaults give MOVi-like
    scenes that a 64x64 or 128x128 camera sees well."""

    min_objects: int = 3
    max_objects: int = 10
    num_classes: int = 8
    object_size: tuple[float, float] = (0.3, 0.75)
    main_size: tuple[float, float] = (0.9, 1.2)
    spawn_radius: float = 3.5
    main_spawn_radius: float = 2.5
    moving_probability: float = 0.5
    spin_probability: float = 0.5
    travel: tuple[float, float] = (0.5, 2.0)
    main_travel: tuple[float, float] = (0.75, 3.0)
    main_image_travel: tuple[float, float] = (0.12, 0.22)
    main_vertical_travel: float = 0.5
    spin: float = math.pi
    class_jitter: float = 0.3
    camera_distance: tuple[float, float] = (9.0, 13.0)
    camera_elevation: tuple[float, float] = (20.0, 50.0)
    camera_travel: tuple[float, float] = (1.5, 4.0)
    camera_min_distance: float = 8.0
    camera_min_height: float = 1.5
    target_jitter: float = 1.0
    fov: tuple[float, float] = (40.0, 70.0)
    backdrop_radius: float = 40.0
    light_elevation: tuple[float, float] = (35.0, 70.0)
    ambient: tuple[float, float] = (0.25, 0.4)
    object_cell: tuple[float, float] = (0.12, 0.35)
    ground_cell: tuple[float, float] = (0.4, 1.2)
    backdrop_cell: tuple[float, float] = (2.0, 6.0)

    def validate(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"objects: need 1 <= min_objects <= max_objects, got {self.min_objects} and {self.max_objects}"
            )
        if self.num_classes < 2:
            raise ValueError(f"num_classes={self.num_classes}: the motion label needs at least 2 directions")
        if not 0.0 <= self.class_jitter < 0.5:
            raise ValueError(f"class_jitter={self.class_jitter} must lie in [0, 0.5) (fraction of a class sector)")
        if self.camera_distance[0] < self.camera_min_distance:
            raise ValueError("camera_distance must start at or above camera_min_distance")
        reach = max(self.spawn_radius + 0.5 * self.travel[1] + math.sqrt(3) * self.object_size[1],
                    self.main_spawn_radius + 0.5 * self.main_travel[1] + math.sqrt(3) * self.main_size[1])
        if reach >= self.camera_min_distance:
            raise ValueError(
                f"objects can come within {reach:.2f} m of the origin, not below camera_min_distance="
                f"{self.camera_min_distance}: shrink spawn_radius/travel or move the camera out"
            )
        if self.camera_distance[1] + 0.5 * self.camera_travel[1] >= self.backdrop_radius:
            raise ValueError("the camera must stay well inside the backdrop: raise backdrop_radius")


@dataclass
class Scene:
    """One sampled clip, every quantity per frame where it changes (float32 unless stated).

    Attributes:
        intrinsics: ``(3, 3)`` pixels (raster convention).
        cam_to_world: ``(T, 4, 4)`` OpenCV camera axes, world z up.
        shape: ``(n,)`` int64, :data:`SPHERE` or :data:`BOX`, for the ``n`` present objects.
        size: ``(n, 3)`` half-extents (a sphere's radius repeated), metres.
        object_to_world: ``(n, T, 4, 4)`` rigid pose of each object's local frame (origin at its centre).
        velocity: ``(n, 3)`` metres per frame; ``angular_velocity``: ``(n, 3)`` axis times rad per frame.
        textures: surfaces ``0`` backdrop, ``1`` ground, ``2 + o`` object ``o``.
        light: ``(3,)`` unit vector towards the light; ``ambient``: scalar.
        label: the motion class of the main object (object 0); ``num_classes``: how many classes.
        backdrop_radius: metres.
    """

    intrinsics: Tensor
    cam_to_world: Tensor
    shape: Tensor
    size: Tensor
    object_to_world: Tensor
    velocity: Tensor
    angular_velocity: Tensor
    textures: TextureBank
    light: Tensor
    ambient: float
    label: int
    num_classes: int
    backdrop_radius: float
    height: int
    width: int

    @property
    def num_frames(self) -> int:
        return self.cam_to_world.shape[0]

    @property
    def num_objects(self) -> int:
        return self.shape.shape[0]


def _uniform(gen: torch.Generator, lo: float, hi: float, *shape: int) -> Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=torch.float64)


def _rotation(axis_angle: Tensor) -> Tensor:
    """Rodrigues: ``(..., 3)`` axis * angle → ``(..., 3, 3)`` rotation matrices (float64)."""
    angle = axis_angle.norm(dim=-1, keepdim=True)
    k = axis_angle / angle.clamp_min(1e-12)
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    cross = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], dim=-1).reshape(*k.shape[:-1], 3, 3)
    s, c = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=axis_angle.dtype).expand_as(cross)
    return eye + s * cross + (1 - c) * (cross @ cross)


def sample_camera(gen: torch.Generator, cfg: SceneConfig, taus: Tensor) -> tuple[Tensor, Tensor]:
    """Camera positions ``(T, 3)`` on a straight line (constant velocity) and the look-at target ``(3,)``.

    The path stays at least ``camera_min_distance`` from the origin and ``camera_min_height`` above the
    ground (rejection over a batch of candidates drawn at once, so the draw count is fixed).
    """
    tries = 32
    azimuth = _uniform(gen, 0.0, 2 * math.pi, tries)
    elevation = torch.deg2rad(_uniform(gen, *cfg.camera_elevation, tries))
    distance = _uniform(gen, *cfg.camera_distance, tries)
    start = torch.stack([distance * torch.cos(elevation) * torch.cos(azimuth),
                         distance * torch.cos(elevation) * torch.sin(azimuth),
                         distance * torch.sin(elevation)], dim=-1)
    direction = torch.randn(tries, 3, generator=gen, dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    travel = _uniform(gen, *cfg.camera_travel, tries)[:, None] * direction
    # Centre the path on the sampled point: positions = start + (tau - 1/2) * travel.
    path = start[:, None] + (taus[None, :, None] - 0.5) * travel[:, None]  # (tries, T, 3)
    s = torch.linspace(-0.5, 0.5, 33, dtype=torch.float64)
    dense = start[:, None] + s[None, :, None] * travel[:, None]
    ok = (dense.norm(dim=-1).amin(1) >= cfg.camera_min_distance) & (dense[..., 2].amin(1) >= cfg.camera_min_height)
    choice = int(torch.nonzero(ok)[0]) if bool(ok.any()) else 0
    if not bool(ok.any()):  # keep the start point, which satisfies both constraints, and stand still
        path[0] = start[0].expand_as(path[0])
    jitter = _uniform(gen, -cfg.target_jitter, cfg.target_jitter, 3)
    target = torch.stack([jitter[0], jitter[1], 0.5 * (jitter[2] + cfg.target_jitter)])
    return path[choice], target


def _place(gen: torch.Generator, radius: Tensor, spawn: Tensor) -> Tensor:
    """Ground positions ``(n, 2)`` in discs of radius ``spawn`` ``(n,)``, avoiding overlaps of the
    footprint circles ``radius`` ``(n,)`` when possible (a fixed batch of candidates per object)."""
    n, tries = radius.shape[0], 24
    r = spawn[:, None] * torch.sqrt(torch.rand(n, tries, generator=gen, dtype=torch.float64))
    a = _uniform(gen, 0.0, 2 * math.pi, n, tries)
    cand = torch.stack([r * torch.cos(a), r * torch.sin(a)], dim=-1)  # (n, tries, 2)
    placed = torch.zeros(n, 2, dtype=torch.float64)
    for i in range(n):
        if i == 0:
            placed[0] = cand[0, 0]
            continue
        gap = (cand[i, :, None] - placed[None, :i]).norm(dim=-1) - (radius[i] + radius[:i])[None]
        free = (gap > 0.05).all(dim=1)
        placed[i] = cand[i, int(torch.nonzero(free)[0])] if bool(free.any()) else cand[i, int(gap.amin(1).argmax())]
    return placed


def _ground_direction(centre: Tensor, psi: float, intrinsics: Tensor, cam_to_world: Tensor) -> tuple[Tensor, float]:
    """The horizontal unit direction ``(3,)`` along which a point at ``centre`` moves in the image of
    the camera ``cam_to_world`` ``(4, 4)`` in the direction of angle ``psi`` (counter-clockwise from the
    image's +x axis, image y pointing down), and the image speed along it in pixels per metre.

    A straight line on a horizontal plane images to a straight line, so a displacement along this
    direction, centred on ``centre``, moves the image point exactly along ``psi`` (the image of the
    plane's direction is the Jacobian of the projection at ``centre``)."""
    rot, origin = cam_to_world[:3, :3], cam_to_world[:3, 3]
    q = rot.T @ (centre - origin)
    jac = torch.empty(2, 2, dtype=torch.float64)
    for k in range(2):  # image velocity of a unit ground velocity along world x, y
        dq = rot.T[:, k]
        jac[0, k] = intrinsics[0, 0] * (dq[0] * q[2] - q[0] * dq[2]) / q[2] ** 2
        jac[1, k] = intrinsics[1, 1] * (dq[1] * q[2] - q[1] * dq[2]) / q[2] ** 2
    wanted = torch.tensor([math.cos(psi), -math.sin(psi)], dtype=torch.float64)
    ground = torch.linalg.solve(jac, wanted)
    ground = ground / ground.norm()
    return torch.cat([ground, torch.zeros(1, dtype=torch.float64)]), float((jac @ ground).norm())


def sample_scene(gen: torch.Generator, num_frames: int, height: int, width: int, cfg: SceneConfig,
                 label: int) -> Scene:
    """Draw a scene from ``gen`` (every draw comes from it, in a fixed order).

    ``label`` sets the direction in which the main object (object 0) moves **in the image of the first
    camera** (its own motion, as that camera would see it standing still): with ``C = cfg.num_classes``
    sectors, the image direction is ``psi = 2 pi (label + u) / C`` counter-clockwise from "right"
    (class 0 right, C/4 up, C/2 left, 3C/4 down), ``u ~ U(-class_jitter, class_jitter)``; the object
    slides on the ground along the direction that images to ``psi``, far enough to cover
    ``main_image_travel`` of the image width (clamped to ``main_travel`` metres).
    """
    if not 0 <= label < cfg.num_classes:
        raise ValueError(f"label {label} is outside [0, {cfg.num_classes})")
    taus = torch.arange(num_frames, dtype=torch.float64) / max(num_frames - 1, 1)
    per_frame = 1.0 / max(num_frames - 1, 1)

    # Camera.
    fov = math.radians(float(_uniform(gen, *cfg.fov, 1)))
    intrinsics = intrinsics_from_fov(fov, height, width)
    positions, target = sample_camera(gen, cfg, taus)
    cam_to_world = look_at(positions, target)

    # Objects: counts, shapes, sizes (object 0 is the main object).
    n = int(torch.randint(cfg.min_objects, cfg.max_objects + 1, (1,), generator=gen))
    shape = torch.randint(0, 2, (n,), generator=gen)
    half = _uniform(gen, *cfg.object_size, n, 3)
    half[0] = _uniform(gen, *cfg.main_size, 3)
    sphere = shape == SPHERE
    half[sphere] = half[sphere, :1].expand(-1, 3)  # a sphere's half-extents are its radius
    footprint = torch.where(sphere, half[:, 0], half[:, :2].norm(dim=-1))
    spawn = torch.full((n,), cfg.spawn_radius, dtype=torch.float64)
    spawn[0] = cfg.main_spawn_radius
    centre_xy = _place(gen, footprint, spawn)
    centre = torch.cat([centre_xy, half[:, 2:]], dim=-1)

    # Motion: displacement per clip, the main object's set by the label.
    moving = torch.rand(n, generator=gen) < cfg.moving_probability
    moving[0] = True
    heading = _uniform(gen, 0.0, 2 * math.pi, n)
    travel = _uniform(gen, *cfg.travel, n)
    jitter = float(_uniform(gen, -cfg.class_jitter, cfg.class_jitter, 1))
    # Less travel along the image's vertical, where the ground's foreshortening packs positions closer.
    image_travel = float(_uniform(gen, *cfg.main_image_travel, 1)) * width
    direction = torch.stack([torch.cos(heading), torch.sin(heading), torch.zeros_like(heading)], dim=-1)
    psi = 2 * math.pi * (label + jitter) / cfg.num_classes
    direction[0], px_per_metre = _ground_direction(centre[0], psi, intrinsics, cam_to_world[0])
    image_travel *= math.hypot(math.cos(psi), cfg.main_vertical_travel * math.sin(psi))
    travel[0] = min(max(image_travel / px_per_metre, cfg.main_travel[0]), cfg.main_travel[1])
    displacement = direction * (travel * moving)[:, None]

    spinning = moving & (torch.rand(n, generator=gen) < cfg.spin_probability)
    spin_axis = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    spin_axis[~sphere] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    spin_axis = spin_axis / spin_axis.norm(dim=-1, keepdim=True)
    spin = _uniform(gen, -cfg.spin, cfg.spin, n) * spinning
    yaw = _uniform(gen, 0.0, 2 * math.pi, n)
    base = _rotation(torch.stack([torch.zeros(n), torch.zeros(n), yaw], -1).to(torch.float64))
    rotation = _rotation(spin_axis[:, None] * (spin[:, None, None] * (taus[None, :, None] - 0.5))) @ base[:, None]
    pose = torch.zeros(n, num_frames, 4, 4, dtype=torch.float64)
    pose[..., :3, :3] = rotation
    pose[..., :3, 3] = centre[:, None] + (taus[None, :, None] - 0.5) * displacement[:, None]
    pose[..., 3, 3] = 1.0

    # Light, textures.
    light_az = float(_uniform(gen, 0.0, 2 * math.pi, 1))
    light_el = math.radians(float(_uniform(gen, *cfg.light_elevation, 1)))
    light = torch.tensor([math.cos(light_el) * math.cos(light_az), math.cos(light_el) * math.sin(light_az),
                          math.sin(light_el)], dtype=torch.float64)
    ambient = float(_uniform(gen, *cfg.ambient, 1))
    cell = torch.tensor([cfg.backdrop_cell, cfg.ground_cell] + [cfg.object_cell] * n, dtype=torch.float64)
    value = torch.tensor([(0.5, 0.9), (0.45, 0.85)] + [(0.55, 1.0)] * n, dtype=torch.float64)
    textures = sample_textures(gen, cell, value, flat=torch.arange(n + 2) == 1)
    f32 = torch.float32
    return Scene(
        intrinsics=intrinsics.to(f32), cam_to_world=cam_to_world.to(f32), shape=shape, size=half.to(f32),
        object_to_world=pose.to(f32), velocity=(displacement * per_frame).to(f32),
        angular_velocity=(spin_axis * (spin * per_frame)[:, None]).to(f32), textures=textures,
        light=light.to(f32), ambient=ambient, label=int(label), num_classes=cfg.num_classes,
        backdrop_radius=cfg.backdrop_radius, height=height, width=width,
    )
