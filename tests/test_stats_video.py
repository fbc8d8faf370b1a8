"""MACs of video models: per SR frame, for streaming steps, sliding windows and whole clips."""

from __future__ import annotations

import torch

from edge_sr.models import create_model
from edge_sr.models.stats import CLIP_FRAMES, macs_per_lr_pixel, model_summary


def _conv_weights(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_stream_step_counts_one_frame_with_its_state():
    # every conv of RRN runs at LR resolution, so one step costs exactly its conv weights per LR pixel
    model = create_model("rrn_edge", scale=4, n_c=8, n_b=2)
    assert macs_per_lr_pixel(model, size=(16, 24)) == _conv_weights(model)


def test_whole_clip_model_is_counted_per_frame(monkeypatch):
    from edge_sr.models import stats

    model = create_model("basicvsr", scale=4, num_feat=8, num_block=1)
    per_frame = macs_per_lr_pixel(model, size=(64, 64))
    monkeypatch.setattr(stats, "CLIP_FRAMES", 2 * CLIP_FRAMES)
    # a clip twice as long costs twice as much: per frame the figure stays (one flow per neighbour pair
    # and direction, so T - 1 flows for T frames: within 1 / T)
    assert abs(macs_per_lr_pixel(model, size=(64, 64)) / per_frame - 1) < 1 / CLIP_FRAMES


def test_summary_lists_video_models_with_figures():
    row = model_summary("rrn_edge", scale=4)
    assert row["kind"] == "video" and row["macs_per_lr_pixel"] > 0
    row = model_summary("edvr_m", scale=4)
    assert row["macs_per_lr_pixel"] > row["params"]  # PCD and TSA run every frame of the window


def test_bundled_image_and_video_models_are_listed_apart():
    # the image benchmarks and demos iterate bundled_checkpoints(): a video step must not be among them
    from edge_sr.models.checkpoint import read_metadata
    from edge_sr.models.registry import get_entry
    from edge_sr.weights import DEFAULT_VIDEO_ARCH, bundled_checkpoints, bundled_video_checkpoint

    def kinds(found: dict) -> set[str]:  # by each file's own architecture (a file's name may add e.g. _bd)
        return {
            get_entry(read_metadata(p)["arch"]).kind for by_scale in found.values() for p in by_scale.values()
        }

    images, videos, both = bundled_checkpoints(), bundled_checkpoints("video"), bundled_checkpoints(None)
    assert images and "video" not in kinds(images)
    assert kinds(videos) <= {"video"}
    assert set(both) == set(images) | set(videos)
    if bundled_video_checkpoint(4) is not None:
        assert videos[DEFAULT_VIDEO_ARCH][4] == bundled_video_checkpoint(4)
        assert read_metadata(bundled_video_checkpoint(4))["arch"] == DEFAULT_VIDEO_ARCH
