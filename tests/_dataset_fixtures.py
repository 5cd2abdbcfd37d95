"""Writers of tiny datasets in their real on-disk formats, for the dataset-reader tests.

Every frame carries its own code (``_video_fixtures.index_frames``: a 4x4 grid of 16-px blocks that
survives JPEG/H.264/VP9), so a test reads back exactly which frame of which video it got. Targets are
known functions of (item, track/object, frame): any off-by-one, swapped axis or wrong unit shows.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from _video_fixtures import index_frames

from fourds.data.video import write_video


def jpeg(frame: np.ndarray, quality: int = 92) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def code_frames(n: int, offset: int, h: int = 64, w: int = 96) -> np.ndarray:
    """uint8 (n, h, w, 3); frame k shows code ``offset + k``."""
    return index_frames(n, h, w, offset=offset)


# ------------------------------------------------------------------------------------------ SSv2
SSV2_CLASSES = ["Closing something", "Moving something away from the camera", "Putting something into something"]


def write_ssv2(root: Path, frames: int = 20, label_dir: bool = False) -> dict:
    """Train videos 1, 2, 5 and validation 3; video v frame k shows 100 v + k; test lists id 4 (no label)."""
    labels = {name: str(i) for i, name in enumerate(SSV2_CLASSES)}
    train = [{"id": "1", "template": "Closing [something]", "label": "Closing a jar", "placeholders": ["a jar"]},
             {"id": "2", "template": "Putting [something] into [something]", "label": "x", "placeholders": ["a", "b"]},
             {"id": "5", "template": "moving [something] away from the camera", "label": "y", "placeholders": ["c"]},
             {"id": "9", "template": "Closing [something]", "label": "never downloaded", "placeholders": ["z"]}]
    val = [{"id": "3", "template": "Moving [something] away from the camera", "label": "z", "placeholders": ["d"]}]
    test = [{"id": "4"}]
    if label_dir:
        (root / "labels").mkdir(parents=True)
        names = {"labels": "labels/labels.json", "train": "labels/train.json", "validation": "labels/validation.json",
                 "test": "labels/test.json"}
    else:
        root.mkdir(parents=True, exist_ok=True)
        names = {k: f"something-something-v2-{k}.json" for k in ("labels", "train", "validation", "test")}
    for key, data in (("labels", labels), ("train", train), ("validation", val), ("test", test)):
        (root / names[key]).write_text(json.dumps(data))
    vdir = root / "20bn-something-something-v2"
    vdir.mkdir()
    for v in (1, 2, 3, 4, 5):
        write_video(vdir / f"{v}.webm", code_frames(frames, 100 * v, 64, 80), fps=12, codec="libvpx-vp9")
    return {"labels": {"1": 0, "2": 2, "5": 1, "3": 1}}


# ------------------------------------------------------------------------------------------ K700
K700_ROWS = [  # label, youtube_id (with '_' and a leading '-'), start, end, split
    ("air drumming", "-a_b-c_d_e1", 10, 20),
    ("zumba", "x_y_z-00000", 0, 10),
    ("abseiling", "plainid0001", 5, 15),
    ("air drumming", "missing0000", 1, 11),
]


def write_k700(root: Path, frames: int = 24) -> dict[str, int]:
    """train.csv (4 rows, one clip missing on disk), val.csv, test.csv (no label); clips in per-class and
    flat folders, the per-class folder named *differently* from the label (labels come from the CSV)."""
    ann = root / "annotations"
    ann.mkdir(parents=True)
    header = "label,youtube_id,time_start,time_end,split\n"
    (ann / "train.csv").write_text(header + "".join(f"{lab},{y},{s},{e},train\n" for lab, y, s, e in K700_ROWS))
    (ann / "val.csv").write_text(header + "zumba,valclip0001,3,13,validate\n")
    (ann / "test.csv").write_text("youtube_id,time_start,time_end,split\ntestclip001,0,10,test\n")
    codes = {}
    for n, (_, y, s, e) in enumerate(K700_ROWS[:3]):
        folder = root / "train" / ("wrong_class_name" if n == 0 else "") if n < 2 else root / "train" / "deep" / "er"
        folder.mkdir(parents=True, exist_ok=True)
        write_video(folder / f"{y}_{s:06d}_{e:06d}.mp4", code_frames(frames, 100 * (n + 1), 64, 64), bframes=2)
        codes[y] = 100 * (n + 1)
    (root / "val").mkdir()
    write_video(root / "val" / "valclip0001_000003_000013.mp4", code_frames(frames, 900, 64, 64))
    (root / "test").mkdir()
    write_video(root / "test" / "testclip001_000000_000010.mp4", code_frames(frames, 950, 64, 64))
    (root / "train" / "notes.txt").write_text("not a clip")
    return codes


# ----------------------------------------------------------------------------------------- RE10k
def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def re10k_w2c(k: int) -> np.ndarray:
    """Known world-to-camera [R|t] of frame k."""
    r = rotation([0.2, 1.0, 0.1], 0.05 * k)
    t = np.array([0.1 * k, -0.02 * k, 0.5 + 0.01 * k])
    return np.concatenate([r, t[:, None]], axis=1)


RE10K_K = (0.9, 1.2, 0.45, 0.55)  # fx fy cx cy normalised


def write_re10k(root: Path, split: str, key: str, n: int, offset: int, skip: tuple[int, ...] = (), h: int = 64,
                w: int = 96) -> list[int]:
    """Camera file with n lines (timestamps 1000 + 33366 k µs), frames on disk except ``skip``."""
    cams = root / "metadata" / "RealEstate10K" / split
    frames = root / "frames" / split / key
    cams.mkdir(parents=True, exist_ok=True)
    frames.mkdir(parents=True, exist_ok=True)
    lines = [f"https://www.youtube.com/watch?v={key}"]
    stamps = []
    images = code_frames(n, offset, h, w)
    for k in range(n):
        ts = 1000 + 33366 * k
        stamps.append(ts)
        p = re10k_w2c(k).reshape(-1)
        lines.append(" ".join([str(ts), *(f"{v:.12g}" for v in RE10K_K), "0", "0", *(f"{v:.12g}" for v in p)]))
        if k not in skip:
            (frames / f"{ts}.jpg").write_bytes(jpeg(images[k]))
    (cams / f"{key}.txt").write_text("\n".join(lines) + "\n")
    return stamps


# ------------------------------------------------------------------------------- Perception Test
def pt_point(p: int, k: int, h: int, w: int) -> tuple[float, float]:
    """Known (x, y) pixel position of track p at frame k."""
    return 5.0 + 3.0 * p + 0.5 * k, 7.0 + 2.0 * p + 0.25 * k


def write_perception_test(root: Path, n_frames: int = 40, h: int = 64, w: int = 96) -> dict:
    """Videos 'video_1' (valid; 3 tracks), 'video_2' (train), 'video_7' (valid, not on disk)."""
    (root / "videos").mkdir(parents=True)
    visible = {0: list(range(0, 25)), 1: list(range(3, 20)), 2: [0, 1, 2] + list(range(30, n_frames))}
    tracks = []
    for p, ids in visible.items():
        xy = np.array([pt_point(p, k, h, w) for k in ids])
        tracks.append({"id": p, "label": "point", "parent_objects": [0], "frame_ids": ids,
                       "points": [(xy[:, 1] / h).tolist(), (xy[:, 0] / w).tolist()]})  # [[y..], [x..]] normalised
    meta = lambda vid, split: {"split": split, "video_id": vid, "frame_rate": 30, "num_frames": n_frames,  # noqa: E731
                               "resolution": [h, w], "is_camera_moving": vid == "video_1", "is_cup_game": False}
    data = {"video_1": {"metadata": meta("video_1", "valid"), "point_tracking": tracks, "object_tracking": []},
            "video_2": {"metadata": meta("video_2", "train"), "point_tracking": tracks[:1]},
            "video_3": {"metadata": meta("video_3", "valid"), "point_tracking": []},
            "video_7": {"metadata": meta("video_7", "valid"), "point_tracking": tracks[:1]}}
    (root / "point_tracking_valid.json").write_text(json.dumps(data))
    for vid, off in (("video_1", 100), ("video_2", 300), ("video_3", 500)):
        write_video(root / "videos" / f"{vid}.mp4", code_frames(n_frames, off, h, w), fps=30)
    return {"visible": visible}


# ---------------------------------------------------------------------------------------- TAP-Vid
def tapvid_record(n_frames: int, offset: int, h: int, w: int, jpeg_frames: bool) -> dict:
    frames = code_frames(n_frames, offset, h, w)
    pts = np.zeros((3, n_frames, 2), np.float32)
    occ = np.zeros((3, n_frames), bool)
    for p in range(3):
        for k in range(n_frames):
            x, y = pt_point(p, k, h, w)
            pts[p, k] = (x / w, y / h)
    occ[1, :4] = True
    occ[2, 10:] = True
    video = np.array(tuple(jpeg(f) for f in frames)) if jpeg_frames else frames
    return {"video": video, "points": pts.astype(np.float64 if jpeg_frames else np.float32), "occluded": occ}


def write_tapvid_davis(root: Path, n_frames: int = 24) -> None:
    root.mkdir(parents=True, exist_ok=True)
    data = {"bear": tapvid_record(n_frames, 100, 64, 96, False), "camel": tapvid_record(n_frames, 300, 64, 96, False)}
    with open(root / "tapvid_davis.pkl", "wb") as f:
        pickle.dump(data, f)


def write_tapvid_kinetics(root: Path, n_frames: int = 24) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for s in range(2):
        shard = [tapvid_record(n_frames, 1000 * (s + 1) + 100 * i, 64, 96, True) for i in range(2)]
        with open(root / f"{s:04d}_of_0002.pkl", "wb") as f:
            pickle.dump(shard, f)


# ---------------------------------------------------------------------------------------- MOVi-E
def write_movi_e(root: Path, split: str = "train", n: int = 2, frames: int = 24, size: int = 64) -> None:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        tp = np.zeros((4, frames, 2), np.float32)
        for p in range(4):
            for k in range(frames):
                tp[p, k] = pt_point(p, k, size, size)
        occ = np.zeros((4, frames), bool)
        occ[1, 0] = True  # not visible on frame 0
        occ[3, :] = True  # never visible
        q = np.array([[0, tp[0, 0, 1], tp[0, 0, 0]], [5, tp[1, 5, 1], tp[1, 5, 0]], [2, tp[2, 2, 1], tp[2, 2, 0]],
                      [0, 0, 0]], np.float32)
        np.savez_compressed(folder / f"{i:06d}.npz", video=code_frames(frames, 100 * (i + 1), size, size),
                            target_points=tp, occluded=occ, query_points=q)


# ----------------------------------------------------------------------------------------- Waymo
def waymo_box(o: int, k: int) -> tuple[float, float, float, float]:
    """Known (cx, cy, sx, sy) pixels of object o at frame k."""
    return 20.0 + 10 * o + 0.5 * k, 15.0 + 3 * o, 12.0 + 4 * o, 10.0 + 2 * o


def write_waymo(root: Path, split: str, segment: str, n: int = 40, cameras: tuple = (1, 4), camera_type: str = "int8",
                row_group_size: int = 10, h: int = 64, w: int = 96, seed: int = 0, shuffle: str = "global") -> None:
    """camera_image with the rows shuffled (camera c frame k shows 100 c + k; ``shuffle="local"``: only within
    each row group, time order across groups), camera_box for 3 objects (object 2 is tiny: under 0.5 % of
    the frame; object 1 absent on frames 3-5), camera_calibration."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    base_ts = 1_550_000_000_000_000
    ts = [base_ts + 100_000 * k for k in range(n)]
    rows = [(c, k) for k in range(n) for c in cameras]
    if shuffle == "global":
        rows = [rows[i] for i in rng.permutation(len(rows))]
    else:
        rows = [rows[a + i] for a in range(0, len(rows), row_group_size)
                for i in rng.permutation(min(row_group_size, len(rows) - a))]

    def cam_array(values: list[int]):  # noqa: ANN202
        names = {1: "FRONT", 2: "FRONT_LEFT", 3: "FRONT_RIGHT", 4: "SIDE_LEFT", 5: "SIDE_RIGHT"}
        if camera_type == "string":
            return pa.array([names[v] for v in values], pa.string())
        if camera_type == "dictionary":
            return pa.array([names[v] for v in values], pa.string()).dictionary_encode()
        return pa.array(values, getattr(pa, camera_type)())

    frames = {c: code_frames(n, 100 * c, h, w) for c in cameras}
    images = pa.table({
        "key.segment_context_name": pa.array([segment] * len(rows), pa.string()),
        "key.frame_timestamp_micros": pa.array([ts[k] for _, k in rows], pa.int64()),
        "key.camera_name": cam_array([c for c, _ in rows]),
        "[CameraImageComponent].image": pa.array([jpeg(frames[c][k]) for c, k in rows], pa.binary()),
        "[CameraImageComponent].pose_timestamp": pa.array([ts[k] / 1e6 for _, k in rows], pa.float64()),
    })
    box_rows = []
    for c in cameras:
        for k in range(n):
            for o in range(3):
                if o == 1 and 3 <= k <= 5:
                    continue
                cx, cy, sx, sy = waymo_box(o, k) if o < 2 else (80.0, 50.0, 2.0, 2.0)
                box_rows.append((c, k, o, cx + (c - 1) * 1000, cy, sx, sy))  # other cameras far away: filtering shows
    box_rows = [box_rows[i] for i in rng.permutation(len(box_rows))]
    boxes = pa.table({
        "key.segment_context_name": pa.array([segment] * len(box_rows), pa.string()),
        "key.frame_timestamp_micros": pa.array([ts[r[1]] for r in box_rows], pa.int64()),
        "key.camera_name": cam_array([r[0] for r in box_rows]),
        "key.camera_object_id": pa.array([f"obj-{r[2]}" for r in box_rows], pa.string()),
        "[CameraBoxComponent].box.center.x": pa.array([r[3] for r in box_rows], pa.float64()),
        "[CameraBoxComponent].box.center.y": pa.array([r[4] for r in box_rows], pa.float64()),
        "[CameraBoxComponent].box.size.x": pa.array([r[5] for r in box_rows], pa.float64()),
        "[CameraBoxComponent].box.size.y": pa.array([r[6] for r in box_rows], pa.float64()),
        "[CameraBoxComponent].type": pa.array([1 + r[2] % 2 for r in box_rows], pa.int8()),
    })
    calib = pa.table({
        "key.segment_context_name": pa.array([segment] * len(cameras), pa.string()),
        "key.camera_name": cam_array(list(cameras)),
        **{f"[CameraCalibrationComponent].intrinsic.{k}": pa.array([v * c for c in cameras], pa.float64())
           for k, v in (("f_u", 100.0), ("f_v", 101.0), ("c_u", 48.0), ("c_v", 32.0))},
    })
    for comp, table, kw in (("camera_image", images, {"row_group_size": row_group_size, "use_dictionary": False,
                                                      "write_batch_size": 1}),
                            ("camera_box", boxes, {}), ("camera_calibration", calib, {})):
        folder = root / split / comp
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"{segment}.parquet", **kw)


# --------------------------------------------------------------------------------------- ScanNet
SCANNET_K_COLOR = np.array([[110.0, 0, 63.5, 0], [0, 111.0, 47.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
SCANNET_K_DEPTH = np.array([[55.0, 0, 31.75, 0], [0, 55.5, 23.75, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def scannet_depth_mm(k: int, dh: int = 48, dw: int = 64) -> np.ndarray:
    """Known uint16 depth (mm) of frame k: 1000 + 10 k + 7 * column block, 0 (invalid) in the top-left."""
    d = (1000 + 10 * k + 7 * (np.arange(dw)[None, :] // 8) + 0 * np.arange(dh)[:, None]).astype(np.uint16)
    d[:4, :4] = 0
    return d


def scannet_pose(k: int) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, :3] = rotation([0.0, 1.0, 0.3], 0.02 * k)
    c2w[:3, 3] = [0.05 * k, 1.5, -0.01 * k]
    return c2w


def write_sens(path: Path, n: int, offset: int = 0, invalid: tuple[int, ...] = (), ch: int = 96, cw: int = 128,
               dh: int = 48, dw: int = 64, imu: bool = True) -> None:
    """A version-4 ``.sens`` file written field by field: JPEG colour (frame k shows offset + k), zlib
    uint16 depth (:func:`scannet_depth_mm`), camera-to-world :func:`scannet_pose` (-inf on ``invalid``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colors = code_frames(n, offset, ch, cw)
    name = b"StructureSensor"
    with open(path, "wb") as f:
        f.write(struct.pack("<I", 4))
        f.write(struct.pack("<Q", len(name)))
        f.write(name)
        for m in (SCANNET_K_COLOR, np.eye(4), SCANNET_K_DEPTH, np.eye(4)):
            f.write(struct.pack("<16f", *np.asarray(m, np.float32).reshape(-1)))
        f.write(struct.pack("<ii", 2, 1))  # jpeg colour, zlib_ushort depth
        f.write(struct.pack("<4I", cw, ch, dw, dh))
        f.write(struct.pack("<f", 1000.0))
        f.write(struct.pack("<Q", n))
        for k in range(n):
            pose = np.full((4, 4), -np.inf) if k in invalid else scannet_pose(k)
            color = jpeg(colors[k])
            depth = zlib.compress(scannet_depth_mm(k, dh, dw).astype("<u2").tobytes())
            f.write(struct.pack("<16f", *np.asarray(pose, np.float32).reshape(-1)))
            f.write(struct.pack("<4Q", 1000 * k, 1000 * k + 5, len(color), len(depth)))
            f.write(color)
            f.write(depth)
        if imu:  # the C++ writer appends IMU frames after the images; readers must ignore them
            f.write(struct.pack("<Q", 1))
            f.write(b"\x00" * 80)


def write_scannet_export(folder: Path, n: int, offset: int, invalid: tuple[int, ...] = (), ch: int = 96, cw: int = 128) -> None:
    """The SensReader export of the same content: color/<i>.jpg, depth/<i>.png, pose/<i>.txt, intrinsic/."""
    from PIL import Image

    for sub in ("color", "depth", "pose", "intrinsic"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    colors = code_frames(n, offset, ch, cw)
    for k in range(n):
        (folder / "color" / f"{k}.jpg").write_bytes(jpeg(colors[k]))
        Image.fromarray(scannet_depth_mm(k)).save(folder / "depth" / f"{k}.png")
        pose = np.full((4, 4), -np.inf) if k in invalid else scannet_pose(k)
        np.savetxt(folder / "pose" / f"{k}.txt", pose, fmt="%f")
    np.savetxt(folder / "intrinsic" / "intrinsic_color.txt", SCANNET_K_COLOR, fmt="%f")
    np.savetxt(folder / "intrinsic" / "intrinsic_depth.txt", SCANNET_K_DEPTH, fmt="%f")


def write_scannet(root: Path) -> None:
    """scene0000_00 raw (.sens, 30 frames, frame 4 invalid) and scene0001_00 exported (12 frames, frame 2
    invalid), both train; scene0002_00 val (.sens); split files; scene0099_00 listed but absent."""
    write_sens(root / "scans" / "scene0000_00" / "scene0000_00.sens", 30, offset=100, invalid=(4,))
    write_scannet_export(root / "scans" / "scene0001_00", 12, offset=300, invalid=(2,))
    write_sens(root / "scans" / "scene0002_00" / "scene0002_00.sens", 20, offset=500)
    (root / "scannetv2_train.txt").write_text("scene0000_00\nscene0001_00\nscene0099_00\n")
    (root / "scannetv2_val.txt").write_text("scene0002_00\n")
