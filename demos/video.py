"""`make demo`'s video step: the bundled streaming x4 model on a real clip, on Vid4, and through every target.

1. The clip: ``video/clips/realshort.mp4`` upscaled x4 with its audio copied -> out/demo/realshort_x4.mp4.
2. Vid4 (x4 BI, Y, crop 0, mean of clips): bicubic, the bundled image model frame by frame, the video model.
3. The step (one call per frame, the state fed back) exported to every target in FP32, FP16 and INT8 (calibrated
   on frames of ``video/clips/cockatoo.mp4``, never on Vid4), each artifact streamed over the first frames of
   Vid4 ``walk`` against the float model and the ground truth, and timed per frame at the artifact's size.
4. A side-by-side frame (bicubic | image model | video model | ground truth) -> out/demo/video_side_by_side.png.

Usage: python demos/video.py [--out out/demo] [--data DIR]   (also run by demos/main.py)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# the data root: EDGE_SR_DATA, else the checkout's neighbour ../shared/data (as demos/main.py)
DATA_ROOT = Path(os.environ.get("EDGE_SR_DATA") or ROOT.parent / "shared" / "data")


def say(msg: str = "") -> None:
    from edge_sr.io_utils import console

    print(msg, file=console(), flush=True)


PRECISIONS = ("fp32", "fp16", "int8")


def vid4_table(
    vid4: Path, video_ckpt: Path, image_ckpt: Path | None, *, frames: int | None = None
) -> tuple[str, dict[str, float]]:
    """Vid4 x4 BI (Y, crop 0, mean of clip means): bicubic, the image model frame by frame, the video model."""
    from edge_sr.evaluate_video import evaluate_video
    from edge_sr.models import load_checkpoint

    rows: list[tuple[str, float, float]] = []
    psnr: dict[str, float] = {}
    models: list[tuple[str, Any]] = [("bicubic", "bicubic")]
    if image_ckpt is not None:
        models.append((f"{image_ckpt.stem} (image model, frame by frame)", load_checkpoint(image_ckpt)))
    models.append((f"{video_ckpt.stem} (video model, streamed)", load_checkpoint(video_ckpt)))
    for name, model in models:
        r = evaluate_video(model, vid4, scale=4, degradation="BI", crop=0, frames=frames)
        rows.append((name, r.psnr, r.ssim))
        psnr[name.split(" ")[0]] = r.psnr
    width = max(len(n) for n, _, _ in rows)
    lines = [
        f"  {'model'.ljust(width)}  PSNR (dB)  SSIM",
        *(f"  {n.ljust(width)}  {p:9.2f}  {s:.4f}" for n, p, s in rows),
    ]
    return "\n".join(lines), psnr


def artifacts(
    ckpt: Path,
    out: Path,
    *,
    calib: Path | None,
    input_size: tuple[int, int],
    targets: tuple[str, ...] | None = None,
    calib_clips: int = 4,
) -> tuple[list[tuple[str, str, Path]], list[str]]:
    """Every (target, precision) artifact of the step; returns ([(target, precision, path)], skipped).

    FP16 (its overflow check) and INT8 (its calibration) stream the float step over sequences of ``calib``
    (a video file, downscaled to LR), read once."""
    from edge_sr.convert import TARGETS, ExportSpec, export, target_module
    from edge_sr.quantize.sequences import load_sequences
    from edge_sr.quantize.stream import stream_fp16_export, stream_ptq

    from edge_sr.errors import EdgeSRError
    from edge_sr.models import card_of, load_checkpoint

    model = load_checkpoint(ckpt)
    card = card_of(model)
    seqs = None
    if calib is not None:
        seqs = load_sequences(
            calib, input_size=input_size, scale=card.scale, clips=4, frames=8, colors=card.colors
        )
    made: list[tuple[str, str, Path]] = []
    skipped: list[str] = []
    for precision in PRECISIONS:
        for target in targets or tuple(TARGETS):
            tag = f"{target} {precision}"
            if precision == "int8" and not target_module(target).QUANT_MODES:
                skipped.append(f"{tag}: {target} holds float programs only")
                continue
            t0 = time.perf_counter()
            try:
                if precision == "fp32":
                    art = export(model, target, out, ExportSpec(input_size=input_size), source=ckpt)
                elif seqs is None:
                    skipped.append(f"{tag}: no calibration clip")
                    continue
                elif precision == "fp16":
                    art = stream_fp16_export(model, target, seqs, out=out, source=ckpt)
                else:
                    art = stream_ptq(model, target, seqs, out=out, source=ckpt)
            except EdgeSRError as e:
                skipped.append(f"{tag}: conversion failed: {e}")
                continue
            made.append((target, precision, art.path))
            say(f"  {tag:18s} exported in {time.perf_counter() - t0:.1f} s")
    return made, skipped


def score(
    made: list[tuple[str, str, Path]], ckpt: Path, vid4: Path, *, frames: int, runs: int
) -> list[dict[str, Any]]:
    """Stream each artifact over the first ``frames`` of Vid4 ``walk`` (verify) and time it per frame."""
    from edge_sr.convert.manifest import size_bytes

    from edge_sr.errors import EdgeSRError
    from edge_sr.models import load_checkpoint
    from edge_sr.profile import profile
    from edge_sr.verify import verify_video

    reference = load_checkpoint(ckpt)
    rows: list[dict[str, Any]] = []
    for target, precision, path in made:
        row: dict[str, Any] = {"target": target, "precision": precision, "size_bytes": size_bytes(path)}
        try:
            rep = verify_video(path, reference=reference, data=vid4, clips=["walk"], frames=frames)
            row.update(
                psnr=rep.psnr,
                psnr_float=rep.psnr_float,
                psnr_vs_float=rep.psnr_vs_float,
                drift=rep.drift,
                passed=rep.passed,
            )
        except EdgeSRError as e:
            row["note"] = f"verify failed: {e}"
        try:
            prof = profile(path, runs=runs, warmup=2, ops=False, peak=False, threads=1)
            if prof.median_ms:
                row.update(median_ms=prof.median_ms, fps=1e3 / prof.median_ms)
        except EdgeSRError as e:
            row["latency_note"] = "macOS only" if "macOS" in str(e) else f"profile failed: {e}"
        rows.append(row)
    return rows


def results_table(rows: list[dict[str, Any]], frames: int) -> str:
    head = (
        "target",
        "precision",
        "size",
        f"PSNR walk[:{frames}]",
        "vs float",
        "drift",
        "ms / frame",
        "fps",
        "verified",
    )
    body = []
    for r in rows:
        body.append(
            (
                r["target"],
                r["precision"],
                f"{r['size_bytes'] / 1024:.0f} KiB",
                f"{r['psnr']:.2f} dB" if "psnr" in r else "-",
                f"{r['psnr_vs_float']:.1f} dB" if "psnr_vs_float" in r else "-",
                ("yes" if r["drift"] else "no") if "drift" in r else "-",
                f"{r['median_ms']:.1f}" if "median_ms" in r else r.get("latency_note", "-")[:40],
                f"{r['fps']:.1f}" if "fps" in r else "-",
                {True: "pass", False: "FAIL"}.get(r.get("passed"), "-"),  # type: ignore[arg-type]
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in (head, *body)]
    notes = [f"{r['target']} {r['precision']}: {r['note']}" for r in rows if r.get("note")]
    if any(r["target"] == "coreml" for r in rows) and sys.platform != "darwin":
        notes.append("CoreML off macOS: PSNR from the MIL reference executor; latency needs a Mac")
    notes.append("times: one thread of this CPU, the state fed back between calls as an app does")
    return "\n".join(lines + [f"  note: {n}" for n in notes])


def side_by_side(vid4: Path, video_ckpt: Path, image_ckpt: Path | None, out: Path, frame: int = 12) -> Path:
    """A 128x128 crop of Vid4 ``walk`` frame ``frame``: bicubic | image model | video model | ground truth."""
    import torch
    from PIL import Image, ImageDraw

    from edge_sr.data.sequences import open_sequences
    from edge_sr.evaluate_video import bicubic_frames
    from edge_sr.io_utils import atomic_path
    from edge_sr.models import load_checkpoint
    from edge_sr.models.stream import Stream

    clip = open_sequences(vid4, scale=4, degradation="BI", clips=["walk"])[0]
    lrs = [clip.read_lr(i) for i in range(frame + 1)]
    gt = clip.read_gt(frame)

    def nchw(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float() / 255

    def u8(t: torch.Tensor) -> np.ndarray:
        return (t[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)

    stream = Stream(load_checkpoint(video_ckpt).eval())
    for lr in lrs:
        video_sr = stream.push(nchw(lr))
    panels = [("bicubic", bicubic_frames(lrs[-1][None], 4)[0])]
    if image_ckpt is not None:
        with torch.no_grad():
            panels.append(("image model", u8(load_checkpoint(image_ckpt).eval()(nchw(lrs[-1])))))
    panels += [("video model", u8(video_sr)), ("ground truth", gt)]
    h, w = gt.shape[:2]
    y0, x0, size = h // 2 - 64, w // 2 - 64, 128
    canvas = Image.new("RGB", (len(panels) * (size * 2 + 8), size * 2 + 20), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, img) in enumerate(panels):
        crop = Image.fromarray(np.asarray(img, dtype=np.uint8)[y0 : y0 + size, x0 : x0 + size])
        canvas.paste(crop.resize((size * 2, size * 2), Image.NEAREST), (i * (size * 2 + 8), 20))
        draw.text((i * (size * 2 + 8) + 4, 4), name, fill="black")
    path = out / "video_side_by_side.png"
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def video_step(
    out: Path,
    data_root: Path = DATA_ROOT,
    *,
    checkpoint: Path | None = None,
    input_size: tuple[int, int] = (180, 320),
    frames: int = 12,
    runs: int = 10,
    targets: tuple[str, ...] | None = None,
    eval_frames: int | None = None,
    clip_frames: int | None = None,
    calib_clips: int = 4,
) -> list[dict[str, Any]] | None:
    """The whole video step (the bundled video model unless ``checkpoint``); returns the artifact rows, or
    None when the build has no bundled video model. ``targets`` (default all), ``eval_frames`` (Vid4 frames per clip in the
    table; default all), ``clip_frames`` (frames of the upscaled clip; default all) shorten it."""
    from edge_sr.upscale_video import upscale_video
    from edge_sr.weights import DEFAULT_VIDEO_ARCH, bundled_checkpoint, bundled_video_checkpoint

    ckpt = checkpoint or bundled_video_checkpoint(4)
    if ckpt is None:
        say(
            f"\nno bundled x4 video model in this build (edge_sr/weights/{DEFAULT_VIDEO_ARCH}_x4.safetensors): "
            "video step skipped"
        )
        return None
    image_ckpt = bundled_checkpoint(4)
    video = data_root / "video"
    clip, vid4, calib = video / "clips" / "realshort.mp4", video / "Vid4", video / "clips" / "cockatoo.mp4"
    if clip.is_file():
        rep = upscale_video(
            clip, out / "realshort_x4.mp4", checkpoint=ckpt, progress=False, max_frames=clip_frames
        )
        audio = f"{rep.audio_packets} {rep.audio} packets copied" if rep.audio_copied else "none"
        say(
            f"\nupscaled {clip.name}: {rep.frames} frames at {rep.speed_fps:.1f} fps -> {rep.output} (audio: {audio})"
        )
    if not (vid4 / "GT").is_dir():
        say(f"(no Vid4 at {vid4}: the video table is skipped)")
        return []
    say("\nVid4 x4 BI (Y, crop 0, mean of clips):")
    text, _ = vid4_table(vid4, ckpt, image_ckpt, frames=eval_frames)
    say(text)
    say(f"\n{ckpt.stem}: the step exported at {input_size[0]}x{input_size[1]} -> every target")
    art_dir = out / "video"
    art_dir.mkdir(parents=True, exist_ok=True)
    made, skipped = artifacts(
        ckpt,
        art_dir,
        calib=calib if calib.is_file() else None,
        input_size=input_size,
        targets=targets,
        calib_clips=calib_clips,
    )
    rows = score(made, ckpt, vid4, frames=frames, runs=runs)
    say(
        f"\nper artifact: Vid4 walk (first {frames} frames, Y-PSNR vs ground truth and vs the float model), per-frame time\n"
    )
    say(results_table(rows, frames))
    if skipped:
        say("\nskipped:")
        for s in skipped:
            say(f"  {s}")
    pic = side_by_side(vid4, ckpt, image_ckpt, out)
    say(f"\nside-by-side video frame: {pic}")
    return rows


def main(argv: list[str] | None = None) -> int:
    from edge_sr.io_utils import tool_output_to

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--data", default=str(DATA_ROOT), help="the data root (video/ inside it)")
    ap.add_argument("--frames", type=int, default=12, help="Vid4 walk frames each artifact is verified on")
    ap.add_argument("--checkpoint", default=None, help="a video checkpoint (default: the bundled x4 model)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    with tool_output_to(out / "tools.log"):
        rows = video_step(out, Path(args.data), checkpoint=ckpt, frames=args.frames)
    return 1 if rows is None else 0


if __name__ == "__main__":
    sys.exit(main())
