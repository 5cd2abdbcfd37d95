"""Point tracks of a clip and their query points (Perception Test, TAP-Vid, Kubric MOVi-E).

A reader holds a video's tracks ``(P, N, 2)`` (x, y) raster pixels and visibility ``(P, N)`` over all
``N`` frames; :func:`clip_tracks` cuts them to a clip's frame indices and picks the queries:

- ``"clip_start"`` (default; the paper's protocol, App. A.2.4): tracks visible in the clip's first
  frame, queried there: ``query_points = (0, y, x)``. Other tracks are dropped.
- ``"first"`` (TAP-Vid "query first"): each track's first visible frame within the clip; tracks never
  visible in the clip are dropped.
- ``"stored"``: the format's own query points (Kubric exports), shifted to clip time; tracks whose query
  frame is not in the clip are dropped.
- ``"none"``: every track, no ``query_points``.

Query points are ``(t, y, x)``: ``t`` the frame index *within the clip* (a float holding an integer),
``y, x`` raster pixels (the TAP-Vid order). ``track_ids`` ``(P,)`` int64 gives each kept track's index
in the video's track list.
"""

from __future__ import annotations

import numpy as np
import torch

QUERY_MODES = ("clip_start", "first", "stored", "none")


def check_query_mode(mode: str) -> str:
    if mode not in QUERY_MODES:
        raise ValueError(f"query {mode!r}: choose one of {QUERY_MODES}")
    return mode


def clip_tracks(
    tracks: np.ndarray, visible: np.ndarray, indices: list[int], mode: str = "clip_start",
    stored_queries: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """``{"tracks" (P, T, 2) float32, "visible" (P, T) bool, "track_ids" (P,), ["query_points" (P, 3)]}``.

    Args:
        tracks: ``(P, N, 2)`` (x, y) pixels over all frames of the video.
        visible: ``(P, N)`` bool.
        indices: the clip's frame indices (length T; repeats allowed).
        mode: see the module docstring.
        stored_queries: ``(P, 3)`` (t, y, x) with ``t`` a frame index of the video (``"stored"`` mode).
    """
    idx = np.asarray(indices, dtype=np.int64)
    t = tracks[:, idx].astype(np.float32, copy=False)
    v = visible[:, idx].astype(bool, copy=False)
    ids = np.arange(tracks.shape[0], dtype=np.int64)
    queries = None
    if mode == "clip_start":
        keep = v[:, 0] if v.shape[1] else np.zeros(len(ids), bool)
        t, v, ids = t[keep], v[keep], ids[keep]
        queries = np.concatenate([np.zeros((len(ids), 1), np.float32), t[:, 0, ::-1]], axis=1)
    elif mode == "first":
        keep = v.any(axis=1)
        t, v, ids = t[keep], v[keep], ids[keep]
        first = v.argmax(axis=1)
        xy = t[np.arange(len(ids)), first]
        queries = np.concatenate([first[:, None].astype(np.float32), xy[:, ::-1]], axis=1)
    elif mode == "stored":
        if stored_queries is None:
            raise ValueError("query='stored' needs query points in the file; this one has none")
        q = np.asarray(stored_queries, np.float32)
        qt = np.rint(q[:, 0]).astype(np.int64)
        pos = {int(k): j for j, k in reversed(list(enumerate(idx)))}  # first clip position of each frame
        where = np.array([pos.get(int(k), -1) for k in qt], dtype=np.int64)
        keep = where >= 0
        t, v, ids, where, q = t[keep], v[keep], ids[keep], where[keep], q[keep]
        queries = np.concatenate([where[:, None].astype(np.float32), q[:, 1:]], axis=1)
    else:
        check_query_mode(mode)
    out = {"tracks": torch.from_numpy(np.ascontiguousarray(t)), "visible": torch.from_numpy(np.ascontiguousarray(v)),
           "track_ids": torch.from_numpy(ids)}
    if queries is not None:
        out["query_points"] = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    return out
