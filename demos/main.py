"""`make demo`: the whole product on the bundled x4 model, from a clean clone.

1. The bicubic table on Set5 / Set14 (with the bundled models beside it) and an upscale of a bundled image.
2. Bundled x4 model -> re-parameterize (proven equal) -> FP16 and INT8 (QAT weights when bundled)
   -> every target (CoreML, TFLite, ExecuTorch, ONNX, PT2) -> verify each on Set5 -> profile each.
3. One table (target, precision, size, Set5 PSNR, loss against float, latency) and a side-by-side image
   (bicubic | float | each artifact) of a Set5 crop, all under out/demo/.
4. Video (demos/video.py): the bundled streaming x4 model upscales a real clip (audio kept), is scored on Vid4
   against bicubic and the image model, and its step goes to every target in FP32 / FP16 / INT8, each artifact
   verified frame by frame and timed per frame; a side-by-side video frame.

Steps that this build cannot run are listed with the reason, never silently dropped.
Usage: python demos/main.py [--out out/demo] [--data DIR] [--input-size 180x320]
(the data root is $EDGE_SR_DATA, else ../shared/data beside the checkout)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# the data root: EDGE_SR_DATA, else the checkout's neighbour ../shared/data (the layout CI uses)
DATA_ROOT = Path(os.environ.get("EDGE_SR_DATA") or ROOT.parent / "shared" / "data")
DATA = DATA_ROOT / "benchmarks"
CALIB = DATA_ROOT / "train" / "BSD200"  # photos, used as LR calibration patches
PRECISIONS = ("fp16", "int8")


def say(msg: str = "") -> None:
    from edge_sr.io_utils import console

    print(msg, file=console(), flush=True)


# ---------------------------------------------------------------- step 1: issue 2's demo


def bicubic_table(data: Path, scales: tuple[int, ...] = (2, 3, 4)) -> str:
    """Set5 / Set14 Y-PSNR of MATLAB bicubic and of the bundled model of each scale."""
    from edge_sr.evaluate import evaluate
    from edge_sr.weights import bundled_checkpoint

    lines = ["| set | scale | bicubic | bundled model |", "| --- | ---: | ---: | ---: |"]
    for name in ("Set5", "Set14"):
        if not (data / name / "HR").is_dir():
            continue
        for s in scales:
            bic = evaluate(data / name, s, "bicubic").psnr
            ckpt = bundled_checkpoint(s)
            net = f"{evaluate(data / name, s, ckpt).psnr:.2f} ({ckpt.stem})" if ckpt else "—"
            lines.append(f"| {name} | x{s} | {bic:.2f} | {net} |")
    return "\n".join(lines)


def upscale_asset(model: Any, out: Path) -> Path:
    """Upscale the bundled demo image with the float model."""
    from edge_sr.data.io import read_image, write_image
    from edge_sr.runtime import from_model

    img = read_image(ROOT / "edge_sr" / "assets" / "demo.png").rgb
    sr = from_model(model).run(img)
    return write_image(out / "demo_upscaled.png", np.clip(sr, 0, 1))


# ---------------------------------------------------------------- step 2: the chain


def run_chain(
    ckpt: Path,
    out: Path,
    *,
    data: Path | None,
    calib: Path | None = None,
    calib_count: int = 16,
    targets: tuple[str, ...] | None = None,
    precisions: tuple[str, ...] = PRECISIONS,
    input_size: tuple[int, int] = (180, 320),
    runs: int = 10,
    warmup: int = 2,
) -> tuple[list[dict[str, Any]], list[str], Any]:
    """Re-parameterize -> export -> verify -> profile every (target, precision); returns (rows, skipped,
    deploy model). Each row: target, precision, size_bytes, psnr, psnr_float, loss, median_ms, artifact.
    ``targets`` defaults to every registered target; a precision a target does not offer is listed as skipped."""
    import torch
    from edge_sr.convert import TARGETS, target_module
    from edge_sr.convert.manifest import size_bytes as artifact_size

    from edge_sr.bench import Skip, export_artifact
    from edge_sr.errors import EdgeSRError
    from edge_sr.models import load_checkpoint
    from edge_sr.profile import profile
    from edge_sr.reparam import check_equivalent, reparameterize
    from edge_sr.verify import verify

    train = load_checkpoint(ckpt)
    deploy = reparameterize(train)
    eq = check_equivalent(train, deploy, [torch.rand(1, 3, 24, 24)], atol=1e-4)
    say(
        f"re-parameterized {ckpt.name}: max |train - deploy| = {eq.max_abs_diff:.2e} ({'equal' if eq.passed else 'DIFFERENT'})"
    )
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for precision in precisions:
        for target in targets or tuple(TARGETS):
            tag = f"{target} {precision}"
            if precision == "int8" and not target_module(target).QUANT_MODES:
                skipped.append(f"{tag}: {target} holds float programs only")
                continue
            t0 = time.perf_counter()
            try:
                art = export_artifact(
                    deploy,
                    ckpt,
                    target,
                    precision,
                    input_size,
                    out,
                    str(calib) if calib else None,
                    calib_count,
                )
            except Skip as e:
                skipped.append(f"{tag}: {e}")
                continue
            except EdgeSRError as e:
                skipped.append(f"{tag}: conversion failed: {e}")
                continue
            row: dict[str, Any] = {
                "target": target,
                "precision": precision,
                "artifact": str(art),
                "size_bytes": artifact_size(art),
            }
            try:
                rep = verify(art, reference=deploy, data=str(data) if data else None)
                row.update(
                    psnr=rep.psnr,
                    psnr_float=rep.psnr_float,
                    loss=rep.psnr_float - rep.psnr,
                    passed=rep.passed,
                )
            except EdgeSRError as e:
                row["verify_note"] = f"verify failed: {e}"
            try:
                prof = profile(art, runs=runs, warmup=warmup, ops=False)
                row.update(median_ms=prof.median_ms, percent_of_peak=prof.percent_of_theoretical_peak)
            except EdgeSRError as e:
                row["latency_note"] = e.problem.split(" (")[0].split(";")[0]
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            say(f"  {tag:18s} done in {row['seconds']:.1f} s")
    return rows, skipped, deploy


def results_table(rows: list[dict[str, Any]]) -> str:
    def f(v: Any, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    head = f"{'target':<11} {'precision':<9} {'size':>10} {'Set5 PSNR':>10} {'loss':>8} {'latency':>11}  verified"
    lines = [head, "-" * len(head)]
    notes_lat: list[str] = []
    for r in rows:
        if r.get("median_ms") is not None:
            lat = f"{r['median_ms']:.2f} ms"
        else:
            lat = "macOS only" if "macOS" in r.get("latency_note", "") else "—"
            if r.get("latency_note") and lat == "—":
                notes_lat.append(f"{r['target']} {r['precision']} latency: {r['latency_note']}")
        ok = {True: "pass", False: "FAIL", None: "—"}[r.get("passed")]
        lines.append(
            f"{r['target']:<11} {r['precision']:<9} {r['size_bytes'] / 1024:>7.1f} KB {f(r.get('psnr'), '.2f'):>7} dB "
            f"{f(r.get('loss'), '+.3f'):>8} {lat:>11}  {ok}"
        )
    notes = [f"{r['target']} {r['precision']}: {r['verify_note']}" for r in rows if r.get("verify_note")]
    notes += notes_lat
    if any(r.get("median_ms") is None and "macOS" in r.get("latency_note", "") for r in rows):
        notes.append(
            "CoreML latency needs macOS; its Set5 PSNR comes from the reference execution of the program"
        )
    if any(r["target"] == "coreml" and r["precision"] == "int8" for r in rows) and sys.platform != "darwin":
        notes.append(
            "coreml int8 is W8A8; off macOS its quantize / dequantize program runs in the reference executor"
        )
    return "\n".join(lines + [f"  note: {n}" for n in notes])


# ---------------------------------------------------------------- step 3: the picture


def comparison_image(
    rows: list[dict[str, Any]],
    deploy: Any,
    data: Path,
    out: Path,
    scale: int = 4,
    image: str = "butterfly",
    crop: int = 32,
) -> Path | None:
    """bicubic | float | each artifact, on a (crop x crop) LR patch of a Set5 image, saved as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_sr.data.imresize import imresize
    from edge_sr.data.io import read_image
    from edge_sr.io_utils import atomic_path
    from edge_sr.runtime import from_model, load

    lr_path = data / "LR_bicubic" / f"X{scale}" / f"{image}.png"
    if not lr_path.is_file():
        return None
    lr = read_image(lr_path).rgb
    y0, x0 = (lr.shape[0] - crop) // 2, (lr.shape[1] - crop) // 2
    patch = np.ascontiguousarray(lr[y0 : y0 + crop, x0 : x0 + crop])
    panels = [
        ("bicubic", imresize((patch * 255).round().astype(np.uint8), float(scale)) / 255.0),
        ("float", from_model(deploy).run(patch)),
    ]
    for r in rows:
        try:
            panels.append((f"{r['target']} {r['precision']}", load(r["artifact"]).run(patch)))
        except Exception as e:  # one unrunnable artifact must not lose the picture
            warnings.warn(f"{r['artifact']}: {e}", stacklevel=1)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6), dpi=110)
    for ax, (title, img) in zip(np.atleast_1d(axes), panels):
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    path = out / "comparison.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    ap.add_argument(
        "--data", default=str(DATA), help="folder with Set5/ and Set14/ (default $EDGE_SR_DATA/benchmarks)"
    )
    ap.add_argument(
        "--calib", default=str(CALIB), help="INT8 calibration images (default $EDGE_SR_DATA/train/BSD200)"
    )
    ap.add_argument("--input-size", default="180x320", help="artifact input size (default 180x320)")
    ap.add_argument("--runs", type=int, default=10, help="timed runs per artifact (default 10)")
    ap.add_argument("--no-video", action="store_true", help="skip the video step (demos/video.py)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    warnings.filterwarnings("ignore")

    from edge_sr.errors import EdgeSRError
    from edge_sr.io_utils import tool_output_to
    from edge_sr.weights import bundled_checkpoint

    t_start = time.perf_counter()
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    set5 = data / "Set5" if (data / "Set5" / "HR").is_dir() else None
    say("== edge-sr demo ==")
    if set5 is None:
        say(f"(no benchmark data at {data}: PSNR columns and the comparison image are skipped)")
    else:
        say("\nBicubic against the bundled models (Y-PSNR, dB):")
        say(bicubic_table(data))
    ckpt = bundled_checkpoint(4)
    if ckpt is None:
        say(
            "\nno bundled x4 model in this build: the conversion chain needs one (edge_sr/weights/*_x4.safetensors)"
        )
        return 1
    log = out / "tools.log"
    say(f"(converter and runtime output goes to {log})")
    try:
        with tool_output_to(log):
            _chain_and_report(ckpt, out, set5, args)
            if not args.no_video:
                say("\n== video ==")
                _video_module().video_step(out, DATA_ROOT, runs=args.runs)
    except EdgeSRError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    say(f"\ndone in {time.perf_counter() - t_start:.0f} s; outputs in {out}/")
    return 0


def _video_module() -> Any:
    """demos/video.py, loaded by path (the demos are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edge_sr_demo_video", Path(__file__).with_name("video.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _chain_and_report(ckpt: Path, out: Path, set5: Path | None, args: argparse.Namespace) -> None:
    """The conversion chain, the upscaled image, the table and the comparison picture."""
    from edge_sr.convert.spec import parse_hw

    rows, skipped, deploy = run_chain(
        ckpt,
        out,
        data=set5,
        calib=Path(args.calib) if Path(args.calib).is_dir() else None,
        input_size=parse_hw(args.input_size),
        runs=args.runs,
    )
    up = upscale_asset(deploy, out)
    say(f"\nupscaled the bundled image: {up}")
    say(f"\n{ckpt.stem}: bundled x4 model, {args.input_size} input, Set5 Y-PSNR, latency on this CPU\n")
    say(results_table(rows))
    if skipped:
        say("\nskipped:")
        for s in skipped:
            say(f"  {s}")
    if set5 is not None:
        pic = comparison_image(rows, deploy, set5, out)
        if pic:
            say(f"\nside-by-side comparison: {pic}")


if __name__ == "__main__":
    sys.exit(main())
