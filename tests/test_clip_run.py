"""Long clips on the host (``edge_sr.runtime.clip``): temporal chunks of whole-clip models against the whole
clip, spatial tiles against whole frames, EDVR's windows against the model on BasicSR's padded windows, frame
count and order, memory bounded by the chunk, bad inputs in one line, the FP32 guard, the CUDA out-of-memory
retry, and ``edge-sr upscale`` / ``edge-sr eval`` / ``edge-sr bench gpu --video`` with tiny models.

Stand-in :class:`ClipFn` s (plain numpy / torch functions) test the machinery cheaply; tiny random BasicVSR and
EDVR-M (the registry's tiny options as tests/test_models_video_host.py builds them) test the real models.
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from seqdata import gt_frame
from test_models_video_host import TINY, _tiny

from edge_sr.cli import main
from edge_sr.errors import ConfigError, InputError, RuntimeBackendError
from edge_sr.models import save_checkpoint
from edge_sr.runtime.clip import (
    DEFAULT_CHUNK,
    ClipFn,
    EagerClip,
    chunking,
    clip_fn,
    default_overlap,
    frame_indices,
    run_clip,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # noqa: ANN202
    """Tiny models on tiny frames: one thread (two threads contending on a shared two-core machine cost 5x)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _moving(n: int, h: int, w: int) -> np.ndarray:
    """(n, h, w, 3) float32 frames of a smoothly moving pattern (flows that mean something)."""
    return np.stack([gt_frame("alpha", i, h, w) for i in range(n)]).astype(np.float32) / 255


def _whole(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        y = model(torch.from_numpy(x).permute(0, 3, 1, 2)[None])[0]
    return y.permute(0, 2, 3, 1).numpy()


def _local(frames: np.ndarray) -> np.ndarray:
    """A stand-in clip model with a 1-pixel spatial reach: each frame plus a tenth of the clip's mean, 3x3
    box blur (reflect at the borders, as the tiler pads), nearest x2. (T, h, w, 3) -> (T, 2h, 2w, 3)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    y = F.avg_pool2d(F.pad(x + 0.1 * x.mean(0, keepdim=True), (1, 1, 1, 1), mode="reflect"), 3, 1)
    return F.interpolate(y, scale_factor=2, mode="nearest").permute(0, 2, 3, 1).numpy()


def _index_frames(n: int, h: int = 8, w: int = 8) -> Iterator[np.ndarray]:
    """Frame i is filled with i / 1000 (its index, readable back from any output pixel)."""
    for i in range(n):
        yield np.full((h, w, 3), i / 1000, dtype=np.float32)


def _identity(kind: str = "clip", **kw: object) -> ClipFn:
    """Nearest x1 'upscaling': clip -> every frame; window -> the centre frame."""
    if kind == "clip":
        return ClipFn(lambda f: f.copy(), "clip", 1, None, 2, **kw)  # type: ignore[arg-type]
    t = int(kw.pop("frames", 3) or 3)  # type: ignore[call-overload]
    return ClipFn(lambda f: f[len(f) // 2].copy(), "window", 1, t, t, **kw)  # type: ignore[arg-type]


# --- temporal chunks -------------------------------------------------------------------------------------


def test_chunks_against_the_whole_clip() -> None:
    """Chunk 0 is the whole clip, exactly. With chunks, no frame is exact (the propagation reaches the whole
    clip), but the overlap keeps the seams close: measured here, chunk 8 / overlap 2 (the 4 shared frames'
    outputs blended) stays within 5.0e-4 of the whole clip on every frame, while without the overlap the
    frames before the cut are 2.4e-3 off (bound 1e-3 between the two)."""
    model = _tiny("basicvsr")
    x = _moving(12, 32, 32)
    ref = _whole(model, x)
    cf = clip_fn(model)
    assert np.array_equal(np.stack(list(run_clip(cf, x, chunk=0))), ref)
    with_ov = np.abs(np.stack(list(run_clip(cf, x, chunk=8, overlap=2))) - ref).max(axis=(1, 2, 3))
    no_ov = np.abs(np.stack(list(run_clip(cf, x, chunk=8, overlap=0))) - ref).max(axis=(1, 2, 3))
    print(
        f"chunk 8 vs whole, max |diff| per frame: overlap 2 {np.round(with_ov, 5)}, overlap 0 {np.round(no_ov, 5)}"
    )
    assert with_ov.max() < 1e-3 < no_ov.max()


def test_chunk_plan_order_and_count() -> None:
    """Every length, around the chunk boundaries: one output per input, in order; the model is called on
    chunks of exactly ``chunk`` frames once the clip is that long (the last one shifted back)."""
    calls: list[int] = []

    def fn(f: np.ndarray) -> np.ndarray:
        calls.append(len(f))
        return f.copy()

    cf = ClipFn(fn, "clip", 1, None, 2)
    for n in (2, 5, 6, 7, 8, 9, 10, 11, 23):
        calls.clear()
        out = [float(o[0, 0, 0]) for o in run_clip(cf, _index_frames(n), chunk=6, overlap=1)]
        assert out == pytest.approx([i / 1000 for i in range(n)]), n
        assert all(c == min(6, n) for c in calls), (n, calls)
    assert chunking(cf, None, None) == (DEFAULT_CHUNK, default_overlap(DEFAULT_CHUNK))
    assert chunking(cf, 0, None) == (0, 0)
    assert default_overlap(4) == 1 and default_overlap(2) == 0


def test_memory_does_not_grow_with_the_clip() -> None:
    """Frames read ahead of the frames yielded (what run_clip holds) are the same for 40 and 200 frames."""

    def held(cf: ClipFn, n: int, **kw: object) -> int:
        read = [0]

        def frames() -> Iterator[np.ndarray]:
            for f in _index_frames(n, 4, 4):
                read[0] += 1
                yield f

        most = 0
        for k, _ in enumerate(run_clip(cf, frames(), **kw)):  # type: ignore[arg-type]
            most = max(most, read[0] - k)
        return most

    clip = _identity("clip")
    assert held(clip, 40, chunk=8, overlap=2) == held(clip, 200, chunk=8, overlap=2) <= 8 + 4 + 1
    window = _identity("window", frames=5)
    assert held(window, 40) == held(window, 200) <= 2 * 5
    assert held(clip, 200, chunk=0) == 200  # the whole clip at once: what chunking avoids

    def peak(
        n: int, chunk: int
    ) -> int:  # traced numpy memory (0.6 MB here), the outputs consumed as they come
        tracemalloc.start()
        for _ in run_clip(clip, _index_frames(n, 32, 32), chunk=chunk, overlap=2 if chunk else 0):
            pass
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top

    assert peak(200, 8) < 1.1 * peak(40, 8)
    assert peak(200, 0) > 3 * peak(40, 0)  # the measure sees a whole clip's growth (2.5 -> 12 MB)


# --- tiles -----------------------------------------------------------------------------------------------


def test_tiles_equal_whole_frames_for_a_local_model() -> None:
    """A model whose reach (1 pixel) is inside the tile overlap: tiled equals untiled, on every pixel."""
    cf = ClipFn(_local, "clip", 2, None, 2)
    x = np.random.default_rng(0).random((4, 37, 29, 3), dtype=np.float32)
    ref = _local(x)
    tiled = np.stack(list(run_clip(cf, x, chunk=0, tile=16, tile_overlap=2)))
    assert tiled.shape == ref.shape == (4, 74, 58, 3)
    assert np.allclose(tiled, ref, atol=1e-6)
    window = ClipFn(lambda f: _local(f)[len(f) // 2], "window", 2, 3, 3, multiple=4, min_side=8)
    tiled = np.stack(list(run_clip(window, x, tile=16, tile_overlap=2)))
    want = np.stack([_local(x[frame_indices(i, 4, 3)])[1] for i in range(4)])
    assert tiled.shape == want.shape and np.allclose(tiled, want, atol=1e-6)


def test_tiles_of_a_real_model_inside_tiles() -> None:
    """Tiny BasicVSR, 48x48 frames in 32-pixel tiles with 8 pixels of overlap: SpyNet sees each tile alone, so
    the flow (and the output) may differ from the whole frame's near the cuts (measured: 2.6e-4 at most with
    these weights); a tile covering the frame is exact."""
    model = _tiny("basicvsr")
    x = _moving(2, 48, 48)
    ref = _whole(model, x)
    cf = clip_fn(model)
    one = np.stack(list(run_clip(cf, x, chunk=0, tile=48)))
    assert np.array_equal(one, ref)
    tiled = np.stack(list(run_clip(cf, x, chunk=0, tile=32, tile_overlap=8)))
    assert tiled.shape == ref.shape and np.isfinite(tiled).all()
    print(
        f"tiled 32 px, overlap 8, vs whole frames: max {np.abs(tiled - ref).max():.4f} mean {np.abs(tiled - ref).mean():.5f}"
    )
    assert np.abs(tiled - ref).max() < 2e-3


def test_fixed_size_artifact_tiles_and_pads() -> None:
    """An artifact's (h, w) and T: every call gets exactly (T, h, w, 3); larger frames are tiled, smaller
    padded, and the outputs equal the local model's on the whole frames."""
    seen: set[tuple[int, ...]] = set()

    def fn(f: np.ndarray) -> np.ndarray:
        seen.add(f.shape)
        return _local(f)

    x = np.random.default_rng(1).random((7, 20, 12, 3), dtype=np.float32)
    cf = ClipFn(fn, "clip", 2, 7, 7, size=(16, 16), name="art")
    out = np.stack(list(run_clip(cf, x, tile_overlap=2)))
    assert seen == {(7, 16, 16, 3)}
    assert np.allclose(out, _local(x), atol=1e-6)
    with pytest.raises(ConfigError, match="exactly 7 frames"):
        run_clip(cf, x, chunk=5)
    with pytest.raises(InputError, match="6 frames.*7"):
        list(run_clip(cf, x[:6]))


# --- EDVR windows ----------------------------------------------------------------------------------------


def test_frame_indices_are_basicsr_reflection_circle() -> None:
    # BasicSR's docstring: current_idx 0, num_frames 5 -> reflection_circle [4, 3, 0, 1, 2]
    assert frame_indices(0, 10, 5) == [4, 3, 0, 1, 2]
    assert frame_indices(9, 10, 5) == [7, 8, 9, 6, 5]
    assert frame_indices(4, 10, 5) == [2, 3, 4, 5, 6]
    assert frame_indices(1, 10, 3) == [0, 1, 2]


def test_edvr_windows_equal_the_model_on_padded_windows() -> None:
    model = _tiny("edvr_m")  # a 3-frame window
    x = _moving(6, 16, 16)
    cf = clip_fn(model)
    assert (cf.kind, cf.min_frames, cf.multiple) == ("window", TINY["edvr_m"]["num_frame"], 4)
    out = list(run_clip(cf, iter(list(x))))
    assert len(out) == 6
    for i, y in enumerate(out):
        with torch.no_grad():  # the model on BasicSR's window
            want = model(torch.from_numpy(x[frame_indices(i, 6, 3)]).permute(0, 3, 1, 2)[None])[0]
        want = want.permute(1, 2, 0).numpy()
        assert np.allclose(y, want, atol=1e-6), i


# --- bad inputs, precision, memory ----------------------------------------------------------------------


def test_bad_inputs_one_line() -> None:
    edvr = clip_fn(_tiny("edvr_m"))
    with pytest.raises(InputError, match="has 2 frames.*needs at least 3") as e:
        list(run_clip(edvr, _moving(2, 16, 16)))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="--tile 18 .*multiples of 4") as e2:
        run_clip(edvr, _moving(3, 16, 16), tile=18)
    assert "\n" not in str(e2.value)
    bvsr = clip_fn(_tiny("basicvsr"))
    with pytest.raises(ConfigError, match="--tile 16 .*at least 32"):
        run_clip(bvsr, _moving(3, 16, 16), tile=16)
    with pytest.raises(ConfigError, match="--chunk 1 "):
        run_clip(bvsr, _moving(3, 16, 16), chunk=1)
    with pytest.raises(ConfigError, match="--chunk-overlap 3"):
        run_clip(bvsr, _moving(3, 16, 16), chunk=6, overlap=3)
    with pytest.raises(InputError, match="has 1 frames.*needs at least 2"):
        list(run_clip(bvsr, _moving(1, 16, 16)))
    with pytest.raises(ConfigError, match="not a whole-clip"):
        clip_fn(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ConfigError, match="precision"):
        clip_fn(_tiny("basicvsr"), precision="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            clip_fn(_tiny("basicvsr"), device="cuda")


def test_fp16_guard_recomputes_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """A low-precision output that is not finite is recomputed in FP32 and counted."""
    model = _tiny("basicvsr")
    x = _moving(3, 32, 32)
    real = EagerClip._forward

    def overflow(self: EagerClip, t: torch.Tensor, low: bool) -> torch.Tensor:
        y = real(self, t, False)
        return y + float("inf") if low else y

    monkeypatch.setattr(EagerClip, "_forward", overflow)
    cf = clip_fn(model, precision="bf16")
    out = np.stack(list(run_clip(cf, x, chunk=0)))
    assert cf.fn.fallbacks == 1  # type: ignore[attr-defined]
    assert np.array_equal(out, _whole(model, x))


def test_out_of_memory_halves_the_tile_then_the_chunk() -> None:
    x = np.random.default_rng(2).random((9, 32, 32, 3), dtype=np.float32)
    calls: list[tuple[int, ...]] = []

    def oom_once(f: np.ndarray) -> np.ndarray:  # the first call runs out of memory
        calls.append(f.shape)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return _local(f)

    notes: list[str] = []
    cf = ClipFn(oom_once, "clip", 2, None, 2)
    out = np.stack(list(run_clip(cf, x, chunk=0, tile=32, tile_overlap=2, notes=notes)))
    assert notes == ["out of device memory; retrying with --tile 16"]
    assert calls[0][1:3] == (32, 32) and {c[1:3] for c in calls[1:]} == {(16, 16)}
    assert np.allclose(out, _local(x), atol=1e-6)

    def oom_big(f: np.ndarray) -> np.ndarray:  # too big until the chunk is at most 4 frames
        if len(f) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return f.copy()

    notes.clear()
    cf = ClipFn(oom_big, "clip", 1, None, 2, min_side=8)
    got = [
        float(o[0, 0, 0])
        for o in run_clip(cf, _index_frames(11, 8, 8), chunk=8, overlap=1, tile=8, notes=notes)
    ]
    assert got == pytest.approx([i / 1000 for i in range(11)])
    assert notes == ["out of device memory at the smallest tile; retrying with half the chunk"]

    def always(f: np.ndarray) -> np.ndarray:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")

    cf = ClipFn(always, "clip", 1, None, 2, min_side=8)
    with pytest.raises(RuntimeBackendError, match="out of device memory even at the smallest"):
        list(run_clip(cf, _index_frames(4), chunk=4, overlap=0, tile=8))


# --- the commands ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bvsr_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(_tiny("basicvsr"), tmp_path_factory.mktemp("ckpt") / "basicvsr_tiny.safetensors")


def test_upscale_cli_clip_model_keeps_count_and_audio(
    data_root: Path, bvsr_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_video_io import audio_packets, small_clip

    from edge_sr.data.video import VideoReader

    src = data_root / "video" / "clips" / "realshort.mp4"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    clip = small_clip(src, tmp_path / "small.mp4", step=8)  # 40x30, 36 frames, AAC
    out = tmp_path / "out.mp4"
    argv = ["upscale", clip, "--checkpoint", bvsr_ckpt, "-o", out, "--frames", "7", "--chunk", "4",
            "--chunk-overlap", "1", "--json"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert (rep["frames"], rep["kind"], rep["model"], rep["chunk"], rep["chunk_overlap"]) == (
        7,
        "clip",
        "basicvsr",
        4,
        1,
    )
    assert rep["size_out"] == [160, 120] and rep["audio_copied"]
    with VideoReader(out) as r:
        assert sum(1 for _ in r) == 7 and (r.info.width, r.info.height) == (160, 120)
    assert audio_packets(out) and audio_packets(out) == audio_packets(clip)[: len(audio_packets(out))]
    # an official-layout EDVR .pth (detected) on a clip shorter than its window: exit 2, one line naming the
    # clip and both numbers, nothing written
    pth = tmp_path / "EDVR_tiny.pth"
    torch.save({"params": _tiny("edvr_m").state_dict()}, pth)
    short = tmp_path / "short.mp4"
    assert main([str(a) for a in ["upscale", clip, "--checkpoint", pth, "-o", short, "--frames", "2"]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(clip) in err and "2 frames" in err and "at least 3" in err
    assert not short.exists()
    # a tile the model's alignment cannot take: exit 2, one line, nothing written
    bad = tmp_path / "bad.mp4"
    assert (
        main([str(a) for a in ["upscale", clip, "--checkpoint", bvsr_ckpt, "-o", bad, "--tile", "16"]]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "--tile 16" in err and len(err.splitlines()) == 1 and not bad.exists()


def test_eval_cli_on_a_vid4_crop(
    data_root: Path, bvsr_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two Vid4 clips, 3 frames each, cropped to 40x32 LR (160x128 GT): the JSON of the video protocol."""
    from PIL import Image

    vid4 = data_root / "video" / "Vid4"
    if not vid4.is_dir():
        pytest.skip(f"{vid4} not found")
    for clip in ("calendar", "city"):
        for folder, side in (("GT", 4), ("BIx4", 1)):
            d = tmp_path / "vid4" / folder / clip
            d.mkdir(parents=True)
            for f in sorted((vid4 / folder / clip).glob("*.png"))[:3]:
                Image.open(f).crop((0, 0, 40 * side, 32 * side)).save(d / f.name)
    argv = ["eval", "--checkpoint", bvsr_ckpt, "--data", tmp_path / "vid4", "--scale", "4", "--json"]
    assert main([str(a) for a in argv]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model"] == bvsr_ckpt.name and res["frames"] == 6 and res["channel"] == "y"
    assert [c["name"] for c in res["clips"]] == ["calendar", "city"]
    assert all(c["frames"] == 3 and len(c["frame_psnr"]) == 3 for c in res["clips"])
    assert 5 < res["psnr"] < 40 and 0 < res["ssim"] < 1
    assert res["psnr"] == pytest.approx(np.mean([c["psnr"] for c in res["clips"]]))
    shutil.rmtree(tmp_path / "vid4")


def test_bench_gpu_video_code_path_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "gpu", "--video", "--device", "cpu", "--tiny", "--lr-size", "16x16", "--frames", "3",
            "--runs", "1", "--precisions", "fp32", "--models", "basicvsr", "edvr_m", "--out", "", "--json"]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["model"], r["precision"], r["frames"]) for r in rows] == [
        ("basicvsr", "fp32", 3),
        ("edvr_m", "fp32", 3),
    ]
    assert all(r["fps"] > 0 and r["size_out"] == [64, 64] for r in rows)
    assert rows[0]["chunk"] == DEFAULT_CHUNK and rows[1]["chunk"] is None
    if not torch.cuda.is_available():
        assert main(["bench", "gpu", "--video", "--json"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


class _FakeClipArtifact:
    """What ``edge_sr.runtime.load`` gives for a clip artifact, as far as upscale / eval use it: ``manifest``
    with its ``clip`` entry (T 4, overlap 1), ``scale``, ``clip_fn()`` with a fixed T and frame size."""

    def __init__(self) -> None:
        self.manifest = {"arch": "fake_clip", "clip": {"kind": "clip", "frames": 4, "overlap": 1}}
        self.scale, self.colors, self.kind, self.path = 2, 3, "onnx", None
        self.shapes: set[tuple[int, ...]] = set()

    def clip_fn(self) -> ClipFn:
        def fn(f: np.ndarray) -> np.ndarray:
            self.shapes.add(f.shape)
            return _local(f)

        return ClipFn(fn, "clip", 2, 4, 4, min_side=8, size=(16, 16), name="fake")


def test_upscale_and_eval_run_a_clip_artifact(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An artifact with ``clip_fn()``: its fixed T and tile size, the manifest's overlap, every frame out."""
    from test_video_io import small_clip

    import edge_sr.runtime
    from edge_sr.evaluate_video import ClipVideo, as_video
    from edge_sr.upscale_video import upscale_video

    src = data_root / "video" / "clips" / "realshort.mp4"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    art = _FakeClipArtifact()
    monkeypatch.setattr(edge_sr.runtime, "load", lambda path, **kw: art)
    clip = small_clip(src, tmp_path / "small.mp4", step=8)
    rep = upscale_video(clip, tmp_path / "out.mp4", checkpoint=tmp_path / "fake.onnx", max_frames=9,
                        tile_overlap=2, progress=False)  # fmt: skip
    assert (rep.frames, rep.kind, rep.model, rep.chunk, rep.chunk_overlap) == (9, "clip", "fake_clip", 4, 1)
    assert rep.size_out == [80, 60] and art.shapes == {(4, 16, 16, 3)}
    video, _ = as_video(art, 2)
    assert isinstance(video, ClipVideo) and (video.overlap, video.chunk) == (1, 0)
    x = np.random.default_rng(3).random((6, 20, 20, 3), dtype=np.float32)
    assert len(list(video.frames(x))) == 6
