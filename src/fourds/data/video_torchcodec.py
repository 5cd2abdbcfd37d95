"""The optional torchcodec decoding backend of :mod:`fourds.data.video` (``FOURDS_VIDEO_BACKEND=torchcodec``
or ``set_backend("torchcodec")``, where torchcodec is installed): exact seeking by frame index through
``torchcodec.decoders.VideoDecoder(seek_mode="exact")``, the same contract as the PyAV backend.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

from fourds.data.video_base import VideoDecodeError, VideoSourceLike, check_range, count_decoded, open_input, short_side_size


def read(src: VideoSourceLike, name: str, indices: Callable[[int], list[int]] | None, size, threads: int) -> tuple[int, dict[int, np.ndarray]]:  # type: ignore[no-untyped-def]
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as err:
        raise RuntimeError(
            "video backend 'torchcodec' is selected but torchcodec is not installed; `pip install torchcodec` "
            "or select the default with fourds.data.video.set_backend('pyav') / FOURDS_VIDEO_BACKEND=pyav"
        ) from err
    target = open_input(src, name)
    if isinstance(target, io.BytesIO):
        target = target.getvalue()  # type: ignore[assignment]
    try:
        decoder = VideoDecoder(target, seek_mode="exact", num_ffmpeg_threads=threads)
        count = int(decoder.metadata.num_frames or 0)
        if indices is None:
            return count, {}
        indices = indices(count) if count else []
        check_range(name, indices, count)
        data = decoder.get_frames_at(indices=list(indices)).data  # (N, 3, H, W) uint8
    except (RuntimeError, ValueError, OSError) as err:
        if isinstance(err, VideoDecodeError):
            raise
        raise VideoDecodeError(name, f"torchcodec failed ({type(err).__name__}: {err})") from err
    count_decoded(len(indices))  # torchcodec does not expose its decode count; this is a lower bound
    frames = data.permute(0, 2, 3, 1)
    if size is not None:
        from fourds.data.geometry import resize_video

        if isinstance(size, int):
            size = short_side_size(frames.shape[1], frames.shape[2], size)
        frames = resize_video(frames, size)
    return count, {k: frames[i].numpy() for i, k in enumerate(indices)}
