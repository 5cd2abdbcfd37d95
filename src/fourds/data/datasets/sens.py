"""A streaming reader of ScanNet ``.sens`` files (the SensReader binary format, version 4, little-endian).

Header: ``uint32 version (4)``, ``uint64 n`` + ``n`` bytes sensor name, four float32 4x4 row-major
matrices (``intrinsic_color``, ``extrinsic_color``, ``intrinsic_depth``, ``extrinsic_depth``), ``int32
color_compression`` (-1 unknown, 0 raw, 1 png, 2 jpeg), ``int32 depth_compression`` (-1 unknown, 0 raw
ushort, 1 zlib ushort, 2 occi), ``uint32 color_width, color_height, depth_width, depth_height``,
``float32 depth_shift``, ``uint64 num_frames``. Each frame: ``float32[16] camera_to_world`` (row-major),
``uint64 timestamp_color, timestamp_depth, color_size_bytes, depth_size_bytes``, then the colour bytes and
the depth bytes. IMU records may follow the frames; they are not read.

:class:`SensFile` reads the header and a table of frame offsets (96 bytes per frame, seeking over the
images), then reads any frame on demand: a long scan is never loaded whole. Sources: ScanNet
``SensReader/python/SensorData.py`` and ``SensReader/c++/src/sensorData.h``.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLOR_COMPRESSION = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {-1: "unknown", 0: "raw_ushort", 1: "zlib_ushort", 2: "occi_ushort"}
FRAME_HEADER = struct.Struct("<16f4Q")  # camera_to_world, timestamps, sizes: 96 bytes


@dataclass(frozen=True)
class SensHeader:
    version: int
    sensor_name: str
    intrinsic_color: np.ndarray  # (4, 4)
    extrinsic_color: np.ndarray
    intrinsic_depth: np.ndarray
    extrinsic_depth: np.ndarray
    color_compression: str
    depth_compression: str
    color_size: tuple[int, int]  # (h, w)
    depth_size: tuple[int, int]
    depth_shift: float
    num_frames: int


class SensFormatError(RuntimeError):
    """The file is not a readable ``.sens`` file (names the file and the byte offset)."""


class SensFile:
    """Header and frame table of one ``.sens`` file; frames are read on demand.

    Attributes:
        header: :class:`SensHeader`.
        camera_to_world: float32 ``(N, 4, 4)`` (may hold ``-inf``/NaN for frames without a pose).
        offsets: byte offset of each frame's colour data; ``color_bytes``/``depth_bytes`` their lengths.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            f = open(self.path, "rb")
        except OSError as err:
            raise SensFormatError(f"cannot open {self.path}: {err}") from err
        with f:
            self.header = self._read_header(f)
            n = self.header.num_frames
            poses = np.empty((n, 4, 4), np.float32)
            self.offsets = np.empty(n, np.int64)
            self.color_bytes = np.empty(n, np.int64)
            self.depth_bytes = np.empty(n, np.int64)
            self.timestamps = np.empty((n, 2), np.uint64)
            size = self.path.stat().st_size
            for i in range(n):
                at = f.tell()
                raw = f.read(FRAME_HEADER.size)
                if len(raw) != FRAME_HEADER.size:
                    raise SensFormatError(f"{self.path} is truncated: frame {i} of {n} starts at byte {at} past the end")
                values = FRAME_HEADER.unpack(raw)
                poses[i] = np.asarray(values[:16], np.float32).reshape(4, 4)
                self.timestamps[i] = values[16:18]
                c, d = values[18], values[19]
                self.offsets[i], self.color_bytes[i], self.depth_bytes[i] = f.tell(), c, d
                end = f.tell() + c + d
                if end > size:
                    raise SensFormatError(f"{self.path} is truncated: frame {i} needs bytes up to {end}, file has {size}")
                f.seek(end)
            self.camera_to_world = poses

    def _read_header(self, f) -> SensHeader:  # type: ignore[no-untyped-def]
        def take(n: int) -> bytes:
            b = f.read(n)
            if len(b) != n:
                raise SensFormatError(f"{self.path} is truncated inside its header (byte {f.tell()})")
            return b

        (version,) = struct.unpack("<I", take(4))
        if version != 4:
            raise SensFormatError(f"{self.path}: .sens version {version}; this reader knows version 4")
        (strlen,) = struct.unpack("<Q", take(8))
        if strlen > 1 << 16:
            raise SensFormatError(f"{self.path}: implausible sensor-name length {strlen}; not a .sens file?")
        name = take(strlen).decode("utf-8", errors="replace")
        mats = [np.asarray(struct.unpack("<16f", take(64)), np.float32).reshape(4, 4) for _ in range(4)]
        cc, dc = struct.unpack("<ii", take(8))
        cw, ch, dw, dh = struct.unpack("<4I", take(16))
        (shift,) = struct.unpack("<f", take(4))
        (n,) = struct.unpack("<Q", take(8))
        if cc not in COLOR_COMPRESSION or dc not in DEPTH_COMPRESSION:
            raise SensFormatError(f"{self.path}: unknown compression codes colour {cc} / depth {dc}")
        return SensHeader(version, name, *mats, COLOR_COMPRESSION[cc], DEPTH_COMPRESSION[dc], (ch, cw), (dh, dw), shift, n)

    @property
    def num_frames(self) -> int:
        return self.header.num_frames

    def read_frame(self, i: int, f=None) -> tuple[bytes, bytes]:  # type: ignore[no-untyped-def]
        """Raw ``(colour bytes, depth bytes)`` of frame ``i`` (``f``: an open handle to reuse)."""
        if not 0 <= i < self.num_frames:
            raise IndexError(f"{self.path}: frame {i} out of range (0..{self.num_frames - 1})")
        own = f is None
        f = open(self.path, "rb") if own else f
        try:
            f.seek(int(self.offsets[i]))
            color = f.read(int(self.color_bytes[i]))
            depth = f.read(int(self.depth_bytes[i]))
        finally:
            if own:
                f.close()
        return color, depth

    def decode_depth(self, data: bytes, i: int) -> np.ndarray:
        """uint16 ``(depth_h, depth_w)`` raw depth (divide by ``depth_shift`` for metres)."""
        h, w = self.header.depth_size
        kind = self.header.depth_compression
        try:
            raw = zlib.decompress(data) if kind == "zlib_ushort" else data if kind == "raw_ushort" else None
        except zlib.error as err:
            raise SensFormatError(f"{self.path}: frame {i}: depth is not a zlib stream ({err})") from err
        if raw is None:
            raise SensFormatError(f"{self.path}: depth compression {kind!r} is not supported (zlib_ushort, raw_ushort)")
        if len(raw) != 2 * h * w:
            raise SensFormatError(f"{self.path}: frame {i}: depth holds {len(raw)} bytes, expected {2 * h * w} ({h}x{w} uint16)")
        return np.frombuffer(raw, dtype="<u2").reshape(h, w)

    def decode_color(self, data: bytes, i: int, size=None) -> tuple[np.ndarray, tuple[int, int]]:  # type: ignore[no-untyped-def]
        """uint8 ``(h, w, 3)`` colour (JPEG/PNG decoded, raw reshaped), native size."""
        from fourds.data.datasets.images import decode_rgb

        kind = self.header.color_compression
        if kind in ("jpeg", "png"):
            try:
                return decode_rgb(data, size, what=f"{self.path} frame {i} colour")
            except RuntimeError as err:
                raise SensFormatError(str(err)) from err
        h, w = self.header.color_size
        if kind == "raw" and len(data) == h * w * 3:
            return np.frombuffer(data, np.uint8).reshape(h, w, 3).copy(), (h, w)
        raise SensFormatError(f"{self.path}: colour compression {kind!r} with {len(data)} bytes is not supported")
