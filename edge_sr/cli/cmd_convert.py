"""`edge-sr convert CKPT --target T`: export a checkpoint to a phone format, then verify it."""

from __future__ import annotations

import argparse
import re

from edge_sr.cli._common import add_json_flag, emit
from edge_sr.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="export a checkpoint to coreml / tflite / executorch / onnx and verify it"
    )
    p.add_argument("checkpoint", help="edge-sr .safetensors checkpoint (train-form ones are fused first)")
    p.add_argument("--target", required=True, help="coreml, executorch, onnx or tflite")
    p.add_argument("--precision", default="fp32", help="fp32 or fp16 (int8: `edge-sr quantize`)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument(
        "--input-size", default="64x64", metavar="HxW", help="fixed input size (default 64x64)"
    )
    shape.add_argument("--dynamic", metavar="MIN:MAX", help="dynamic H and W within [MIN, MAX]")
    p.add_argument("--layout", default="NCHW", help="NCHW or NHWC I/O")
    p.add_argument("--io", default="tensor", help="tensor, or image (coreml ImageType)")
    p.add_argument(
        "--pixel-shuffle", default="reshape", help="reshape, rank4, depth_to_space or conv_transpose"
    )
    p.add_argument("-o", "--output", default=".", help="artifact path or folder (default: current folder)")
    p.add_argument("--no-verify", action="store_true", help="skip the check on built-in images")
    add_json_flag(p)
    p.set_defaults(func=run)


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not m:
        raise ConfigError(None, f"--input-size {text!r} must look like 180x320 (HxW)")
    return int(m.group(1)), int(m.group(2))


def _range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+):(\d+)", text.strip())
    if not m:
        raise ConfigError(None, f"--dynamic {text!r} must look like 32:512 (MIN:MAX)")
    return int(m.group(1)), int(m.group(2))


def run(args: argparse.Namespace) -> int:
    from edge_sr.convert import ExportSpec, export, target_module
    from edge_sr.models import load_checkpoint
    from edge_sr.verify import verify

    target_module(args.target)  # unknown target: fail before loading anything
    if args.precision not in ("fp32", "fp16"):
        raise ConfigError(
            None, f"--precision {args.precision!r}: convert makes fp32 or fp16; int8 needs `edge-sr quantize`"
        )
    spec = ExportSpec(
        input_size=_size(args.input_size),
        dynamic=_range(args.dynamic) if args.dynamic else None,
        precision=args.precision,
        layout=args.layout,
        io=args.io,
        pixel_shuffle=args.pixel_shuffle,
    )
    model = load_checkpoint(args.checkpoint)
    art = export(model, args.target, args.output, spec, source=args.checkpoint)
    report = None if args.no_verify else verify(art.path, reference=model)
    obj = {
        "path": str(art.path),
        "manifest": str(art.manifest_path),
        "target": args.target,
        "precision": args.precision,
        "size_bytes": art.size_bytes,
        "verify": report.to_dict() if report else None,
    }
    text = f"wrote {art.path} ({art.size_bytes} bytes) and {art.manifest_path.name}"
    if report:
        verdict = "passed" if report.passed else "FAILED"
        text += f"\nverify {verdict} ({report.criterion}): {report.psnr:.2f} dB vs HR (float {report.psnr_float:.2f}), "
        text += f"{report.psnr_vs_float:.1f} dB vs float, max abs diff {report.max_abs_diff:.2e}"
    emit(args, obj, text)
    return 0 if report is None or report.passed else 1
