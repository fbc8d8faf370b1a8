"""Video training: the clip sources and degradations, the unrolled recurrence with truncated BPTT, and
``edge-sr train`` on a video model (validation on synthetic sequences, exact resume, refusals)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_ROOT
from safetensors.torch import load_file

from edge_sr.cli import main
from edge_sr.data.clips import (
    ClipDataset,
    FrameFolderSource,
    Motion,
    SyntheticMotionSource,
    VideoFileSource,
    degrade,
    motion_path,
    warp_sequence,
)
from edge_sr.data.datasets import find_images, load_rgb_uint8
from edge_sr.errors import ConfigError
from edge_sr.models import create_model, load_checkpoint
from edge_sr.models.stream import is_stream_model
from edge_sr.train import load_config, train
from edge_sr.train.parts import Unrolled

VIDEO = DATA_ROOT / "video"
T91 = DATA_ROOT / "train" / "T91"


@pytest.fixture(scope="module")
def stills(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight T91 images of at least 100 px, copied to a folder of their own."""
    if not T91.is_dir():
        pytest.skip(f"no training images at {T91}")
    out = tmp_path_factory.mktemp("stills")
    picked = [f for f in find_images(T91) if min(load_rgb_uint8(f).shape[:2]) >= 100][:8]
    for f in picked:
        shutil.copy(f, out / f.name)
    return out


def test_degradations_reproduce_the_vid4_lr_files() -> None:
    gt_dir = VIDEO / "Vid4" / "GT" / "city"
    if not gt_dir.is_dir():
        pytest.skip("no Vid4 data")
    gt = load_rgb_uint8(gt_dir / "00000005.png")
    for kind in ("BI", "BD"):
        lr = load_rgb_uint8(VIDEO / "Vid4" / f"{kind}x4" / "city" / "00000005.png")
        assert np.array_equal(degrade(gt, 4, kind), lr), kind  # type: ignore[arg-type]


def test_warp_is_an_exact_crop_at_integer_motion_and_moves_by_the_path(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(60, 70, 3), dtype=np.uint8)
    path = np.array([[0.0, 0.0, 0.0, 1.0], [4.0, -3.0, 0.0, 1.0]])  # x +4, y -3 HR pixels
    out = warp_sequence(img, path, (10 + 16 - 0.5, 20 + 16 - 0.5), 32).round().to(torch.uint8)
    out = out.permute(0, 2, 3, 1).numpy()
    assert np.array_equal(out[0], img[20:52, 10:42])
    assert np.array_equal(out[1], img[17:49, 14:46])
    # translation-only clips (affine share 0) are exact crops of the still, one offset per frame
    Image.fromarray(img).save(tmp_path / "still.png")
    still = [tmp_path / "still.png"]
    src = SyntheticMotionSource([], min_size=32, scale=4, motion=Motion(speed=1.0, affine=0.0), files=still)
    clip = src.render(img, np.random.default_rng(4), 5, 32)
    offsets = []
    for frame in clip:
        hits = [
            (y, x) for y in range(29) for x in range(39) if np.array_equal(img[y : y + 32, x : x + 32], frame)
        ]
        assert len(hits) == 1
        offsets.append(hits[0])
    assert len(set(offsets)) > 1  # it moved
    # a sub-pixel path is smooth: the frames differ from the first, by less than a plain shift of one pixel
    p = motion_path(np.random.default_rng(3), 5, Motion(speed=0.3, accel=0.0, rotation=0.0, zoom=0.0), 4)
    assert np.allclose(np.diff(p[:, :2], axis=0), p[1, :2]) and 0 < np.hypot(*p[1, :2]) <= 1.2


def test_clip_dataset_is_a_function_of_the_index_and_augments_the_clip_alike(stills: Path) -> None:
    src = SyntheticMotionSource([stills], min_size=32, scale=4)
    kw = {"scale": 4, "patch_size": 8, "frames": 4, "flip": 0.0, "rot90": 0.0, "seed": 5}
    plain = ClipDataset([src], [1.0], reverse=0.0, **kw)
    lr, hr = plain[3]
    assert lr.shape == (4, 3, 8, 8) and hr.shape == (4, 3, 32, 32)
    lr2, hr2 = plain[3]
    assert torch.equal(lr, lr2) and torch.equal(hr, hr2)
    assert not torch.equal(hr[0], hr[-1])  # the camera moved
    backwards = ClipDataset([src], [1.0], reverse=1.0, **kw)
    lr_b, hr_b = backwards[3]
    assert torch.equal(hr_b, hr.flip(0)) and torch.equal(lr_b, lr.flip(0))
    flipped = ClipDataset([src], [1.0], **{**kw, "flip": 1.0}, reverse=0.0)
    _, hr_f = flipped[3]  # both flips on every frame: the clip rotated by 180 degrees
    assert torch.equal(hr_f, hr.flip(-1).flip(-2))


def test_frame_folder_and_video_file_sources(tmp_path: Path, stills: Path) -> None:
    video = tmp_path / "vids" / "a"
    video.mkdir(parents=True)
    img = load_rgb_uint8(find_images(stills)[0])[:40, :40]
    from PIL import Image

    for i in range(3):  # a 3-frame video: the window ping-pongs for 5 frames
        Image.fromarray(np.roll(img, i, axis=1)).save(video / f"{i:08d}.png")
    folders = FrameFolderSource([tmp_path / "vids"], min_size=32, scale=4)
    clip = folders.sample(np.random.default_rng(0), 5, 32)
    assert clip.shape == (5, 32, 32, 3) and np.array_equal(clip[0], clip[4])
    clip_file = VIDEO / "clips" / "realshort.mp4"
    if not clip_file.is_file():
        pytest.skip("no video clip")
    files = VideoFileSource([clip_file], min_size=32, scale=4, max_frames=6, downscale=2)
    assert len(files.videos[0]) == 6 and files.videos[0][0].shape == (120, 160, 3)
    assert files.sample(np.random.default_rng(1), 4, 32).shape == (4, 32, 32, 3)


def test_unrolled_truncates_back_propagation_every_k_frames() -> None:
    torch.manual_seed(0)
    m = create_model("rrn_edge", scale=2, n_c=4, n_b=1)
    for k, reaches_first in ((0, True), (1, False)):
        clip = torch.rand(1, 4, 3, 6, 6, requires_grad=True)
        out = Unrolled(m, tbptt=k)(clip)
        assert out.shape == (1, 4, 3, 12, 12)
        out[:, -1].sum().backward()
        assert clip.grad is not None
        assert bool(clip.grad[:, 0].abs().sum() > 0) is reaches_first


def _video_cfg(tmp_path: Path, stills: Path, iters: int = 4, **video: object) -> Path:
    import yaml

    cfg = {
        "model": {"name": "rrn_edge", "scale": 4, "args": {"n_c": 4, "n_b": 1}},
        "data": {
            "train_folders": [str(stills)],
            "patch_size": 8,
            "batch_size": 2,
            "holdout": 2,
            "val_max_size": 32,
            "video": {"frames": 3, "tbptt": 2, "val_frames": 3, "synthetic": 1.0, **video},
        },
        "iters": iters,
        "val_every": 2,
        "save_every": 2,
        "log_every": 1,
        "out_dir": str(tmp_path / "run"),
        "threads": 1,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_video_training_validates_checkpoints_and_resumes_bit_exactly(
    tmp_path: Path, stills: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra: dict[str, object] = {"frame_folders": [str(stills)], "frame_folders_weight": 0.5}
    clip_file = VIDEO / "clips" / "realshort.mp4"
    if clip_file.is_file():
        extra.update(video_files=[str(clip_file)], video_files_weight=0.5, video_max_frames=4)
    straight = _video_cfg(tmp_path / "a", stills, **extra)
    assert main(["train", str(straight), "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 4 and summary["best_psnr"] > 10
    run = tmp_path / "a" / "run"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_psnr" in r] == [2, 4]
    best = load_checkpoint(run / "best.safetensors")
    assert is_stream_model(best)
    halves = load_config(_video_cfg(tmp_path / "b", stills, **extra))
    assert train(halves, progress=False, until=2).step == 2
    assert train(halves, progress=False, resume=True).step == 4
    a = load_file(str(run / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_video_config_refusals(tmp_path: Path, stills: Path) -> None:
    cfg = load_config(_video_cfg(tmp_path / "a", stills), ["data.augment.mixup=0.5"])
    with pytest.raises(ConfigError, match="mixup"):
        train(cfg, progress=False)
    cfg = load_config(_video_cfg(tmp_path / "b", stills), ["data.video.synthetic=0"])
    with pytest.raises(ConfigError, match="no video training source"):
        train(cfg, progress=False)
    with pytest.raises(ConfigError, match="data.video.frames"):
        load_config(_video_cfg(tmp_path / "c", stills), ["data.video.frames=0"])
    cfg = load_config(_video_cfg(tmp_path / "d", stills), ["data.video.frame_folders_weight=1"])
    with pytest.raises(ConfigError, match="frame_folders"):
        train(cfg, progress=False)


def test_qat_run_trains_the_fake_quant_step_and_exports_int8_at_the_frame_size(
    tmp_path: Path, stills: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``qat.target``: the loop trains the step's fake-quant graph (observers frozen for the last steps), writes
    no float checkpoints, and exports INT8 at ``qat.input_size`` with each state pair sharing one scale."""
    from edge_sr.quantize.stream_io import artifact_qparams

    from edge_sr.models import save_checkpoint

    vid4 = VIDEO / "Vid4"
    if not vid4.is_dir():
        pytest.skip("no Vid4 data")
    torch.manual_seed(0)
    init = tmp_path / "rrn.safetensors"
    save_checkpoint(create_model("rrn_edge", scale=4, n_c=4, n_b=1), init)
    cfg = _video_cfg(tmp_path / "q", stills, iters=5)
    qat = ["qat.target=executorch", f"qat.calib={vid4}", "qat.calib_clips=2", "qat.calib_frames=2",
           "qat.input_size=[12,20]", "qat.freeze_observers_after=0.6", "ema_decay=0", "optim.lr=1e-3"]  # fmt: skip
    args = ["train", str(cfg), "--init", str(init), "--json", "--no-progress"]
    assert main([*args, *(x for kv in qat for x in ("--set", kv))]) == 0
    summary = json.loads(capsys.readouterr().out)
    art = Path(summary["artifact"])
    assert summary["step"] == 5 and art.suffix == ".pte" and art.is_file()
    run = tmp_path / "q" / "run"
    assert not (run / "last.safetensors").exists() and not (run / "resume.pt").exists()
    manifest = json.loads(art.with_name(art.name + ".json").read_text())
    q = manifest["quantization"]
    assert q["method"] == "qat" and q["qat"]["iters"] == 5 and q["qat"]["init"] == str(init)
    assert manifest["inputs"][0]["shape"][-2:] == [12, 20] or manifest["inputs"][0]["shape"][1:3] == [12, 20]
    qp = artifact_qparams(art)
    assert qp["hidden"] == qp["hidden_out"] and qp["prev_sr"] == qp["sr"]
    # refusals, before anything is built
    for extra, match in (([], "--init"), (["--resume"], "resumed")):
        base = ["train", str(cfg), *extra, *(x for kv in qat for x in ("--set", kv))]
        assert main([*base, "--no-progress"]) == 2
        assert match in capsys.readouterr().err
