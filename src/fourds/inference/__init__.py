"""Using trained models on whole videos: feature extraction and dense depth (``fourds extract`` /
``fourds depth``)."""

from fourds.inference.depth import colourise, predict_depth, resize_depth
from fourds.inference.extract import Extraction, extract_features, save_extraction, token_boxes, window_frame_indices
from fourds.inference.models import open_model
from fourds.inference.video_io import VideoInfo, find_videos, iter_frames, read_video, write_video

__all__ = [
    "Extraction",
    "VideoInfo",
    "colourise",
    "extract_features",
    "find_videos",
    "iter_frames",
    "open_model",
    "predict_depth",
    "read_video",
    "resize_depth",
    "save_extraction",
    "token_boxes",
    "window_frame_indices",
    "write_video",
]
