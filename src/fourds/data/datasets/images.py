"""Still images for the frame-folder and frame-table readers (RE10k, ScanNet, Waymo, TAP-Vid Kinetics).

:func:`decode_rgb` decodes a JPEG/PNG (path or bytes) to uint8 ``(h, w, 3)``, optionally resized while
decoding: for JPEG, Pillow's ``draft`` mode first lets libjpeg scale by 1/2, 1/4 or 1/8 in the DCT
(never below the target), then an antialiased resize gives the exact size, so a 1920x1280 Waymo frame
read at 384x256 never exists at full size. :func:`decode_depth_png` reads 16-bit PNG depth maps.
:func:`decoded_image_count` counts decodes in this process (tests use it to check that readers decode
only the frames a clip needs).
"""

from __future__ import annotations

import io
import os
import threading

import numpy as np

from fourds.data.datasets.base import SizeSpec, output_hw

_lock = threading.Lock()
_decoded = 0


def decoded_image_count() -> int:
    """Images decoded by this process since start-up (or :func:`reset_decoded_image_count`)."""
    return _decoded


def reset_decoded_image_count() -> None:
    global _decoded
    with _lock:
        _decoded = 0


def _count() -> None:
    global _decoded
    with _lock:
        _decoded += 1


def _open(src: str | os.PathLike | bytes, what: str):  # type: ignore[no-untyped-def]
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray, memoryview)) else src)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise RuntimeError(f"cannot decode {what}: {err}") from err


def image_size(src: str | os.PathLike | bytes, what: str = "image") -> tuple[int, int]:
    """``(h, w)`` of an image from its header (no decoding)."""
    with _open(src, what) as im:
        return im.height, im.width


def decode_rgb(src: str | os.PathLike | bytes, size: SizeSpec = None, what: str = "image") -> tuple[np.ndarray, tuple[int, int]]:
    """``(uint8 (h, w, 3) RGB, native (H, W))``; ``size`` as in :func:`fourds.data.datasets.base.output_hw`.

    Raises:
        RuntimeError: the data is not a decodable image (names ``what``).
    """
    from PIL import Image

    name = what if not isinstance(src, (str, os.PathLike)) else os.fspath(src)
    with _open(src, name) as im:
        native = (im.height, im.width)
        out = output_hw(native, size)
        try:
            if out != native:
                if im.format == "JPEG":
                    im.draft("RGB", (out[1], out[0]))  # DCT scaling, never below the requested size
                im = im.convert("RGB")
                if (im.height, im.width) != out:
                    im = im.resize((out[1], out[0]), Image.Resampling.BILINEAR, reducing_gap=None)
            else:
                im = im.convert("RGB")
            arr = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError) as err:
            raise RuntimeError(f"cannot decode {name}: {err}") from err
    _count()
    return arr, native


def decode_depth_png(path: str | os.PathLike) -> np.ndarray:
    """A 16-bit PNG depth map as uint16 ``(h, w)`` (ScanNet export: millimetres, 0 = invalid)."""
    with _open(path, os.fspath(path)) as im:
        try:
            arr = np.asarray(im)
        except (OSError, ValueError) as err:
            raise RuntimeError(f"cannot decode depth map {os.fspath(path)}: {err}") from err
    if arr.ndim != 2:
        raise RuntimeError(f"depth map {os.fspath(path)} has shape {arr.shape}; expected a single-channel 16-bit PNG")
    _count()
    return arr.astype(np.uint16, copy=False)
