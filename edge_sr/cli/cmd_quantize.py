"""`edge-sr quantize CKPT --target T --calib DIR -o OUT`: an INT8 (or range-checked FP16) artifact, verified."""

from __future__ import annotations

import argparse
import re

from edge_sr.cli._common import add_json_flag, emit
from edge_sr.errors import ConfigError, RuntimeBackendError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize", help="INT8 PTQ / QAT or FP16 artifacts for coreml, tflite, executorch, onnx"
    )
    p.add_argument("checkpoint", help="edge-sr .safetensors checkpoint (train-form ones are fused first)")
    p.add_argument("--target", required=True, help="coreml, executorch, onnx or tflite")
    p.add_argument(
        "--calib", required=True, metavar="DIR", help="image folder for calibration (HR unless --calib-lr)"
    )
    p.add_argument("--calib-count", type=int, default=32, metavar="N", help="calibration images (default 32)")
    p.add_argument("--calib-lr", action="store_true", help="the calibration images are LR already")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration crops and QAT samples")
    p.add_argument("--precision", default="int8", help="int8 (default) or fp16")
    p.add_argument("--input-size", default="64x64", metavar="HxW", help="export and calibration size (64x64)")
    p.add_argument("--qat", action="store_true", help="quantization-aware fine-tuning before converting")
    p.add_argument("--data", nargs="+", metavar="DIR", help="HR training folders for --qat")
    p.add_argument("--iters", type=int, default=4000, help="QAT steps (default 4000)")
    p.add_argument(
        "--lr", type=float, default=2e-4, help="QAT peak learning rate, cosine-decayed to 0 (default 2e-4)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="QAT batch size (default 8)")
    p.add_argument("--keep-float", nargs="+", default=[], metavar="LAYER", help="layers left in float")
    p.add_argument(
        "--int8-input-layers",
        action="store_true",
        help="quantize the convs that read the image too (by default they stay float: more accurate, and "
        "faster on XNNPACK)",
    )
    p.add_argument(
        "--keep-sensitive", type=int, default=0, metavar="K", help="keep the K most sensitive layers float"
    )
    p.add_argument(
        "--int8-io", action="store_true", help="tflite: int8 input (scale / zero point in the manifest)"
    )
    p.add_argument(
        "--coreml-mode", default="w8a8", help="coreml: w8a8, weights (int8 weight-only) or palettize"
    )
    p.add_argument(
        "--verify-data", metavar="DIR", help="benchmark folder to verify on (default: Set5 when present)"
    )
    p.add_argument("--no-verify", action="store_true", help="skip verification")
    p.add_argument("-o", "--output", required=True, help="artifact path or folder")
    add_json_flag(p)
    p.set_defaults(func=run)


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not m:
        raise ConfigError(None, f"--input-size {text!r} must look like 64x64 (HxW)")
    return int(m.group(1)), int(m.group(2))


def _check(args: argparse.Namespace) -> None:
    """Option combinations no target can take: one line, before anything is loaded or written."""
    from edge_sr.quantize import TARGETS

    if args.target not in TARGETS:
        raise ConfigError(None, f"unknown target {args.target!r}; choose from {', '.join(TARGETS)}")
    if args.precision not in ("int8", "fp16"):
        raise ConfigError(
            None, f"--precision {args.precision!r}: quantize makes int8 or fp16 (fp32: `edge-sr convert`)"
        )
    if args.precision == "fp16" and (args.qat or args.int8_io or args.keep_float or args.keep_sensitive):
        raise ConfigError(
            None, "--qat, --int8-io and --keep-float are int8 options; fp16 keeps offending layers itself"
        )
    if args.int8_io and args.target != "tflite":
        raise ConfigError(None, f"int8 I/O is a tflite option; {args.target} artifacts keep float32 I/O")
    if args.qat and not args.data:
        raise ConfigError(None, "--qat needs --data DIR (HR training images)")
    if args.qat and (args.target == "onnx" or (args.target == "coreml" and args.coreml_mode != "w8a8")):
        raise ConfigError(
            None,
            f"{args.target} {args.coreml_mode if args.target == 'coreml' else ''} cannot take "
            "QAT; use executorch, tflite or coreml --coreml-mode w8a8",
        )
    if args.keep_sensitive and args.target == "coreml" and args.coreml_mode != "w8a8":
        raise ConfigError(
            None, "--keep-sensitive ranks PT2E layers; use --keep-float with coreml weight-only"
        )


def run(args: argparse.Namespace) -> int:
    from edge_sr import quantize as q
    from edge_sr.models import load_checkpoint
    from edge_sr.verify import _shared_set5, verify

    _check(args)
    model = load_checkpoint(args.checkpoint)
    scale = int(getattr(model, "scale", 0) or model.edge_sr_args.get("scale"))
    calib = q.load_calibration(
        args.calib,
        count=args.calib_count,
        input_size=_size(args.input_size),
        scale=scale,
        seed=args.seed,
        lr_input=args.calib_lr,
    )
    keep = list(args.keep_float)
    if args.keep_sensitive:
        keep += [
            n
            for n in q.most_sensitive(q.sensitivity(model, args.target, calib), args.keep_sensitive)
            if n not in keep
        ]
    spec = q.QuantSpec(
        int8_io=args.int8_io,
        keep_float=tuple(keep),
        float_input_layers=not args.int8_input_layers,
        coreml_mode=args.coreml_mode,
    )
    if args.precision == "fp16":
        art = q.fp16_export(model, args.target, calib, out=args.output, source=args.checkpoint)
    elif args.qat:
        art = q.qat(
            model,
            args.target,
            args.data,
            calib=calib,
            iters=args.iters,
            lr=args.lr,
            batch_size=args.batch_size,
            seed=args.seed,
            spec=spec,
            out=args.output,
            source=args.checkpoint,
        )
    else:
        art = q.ptq(model, args.target, calib, spec, out=args.output, source=args.checkpoint)
    report, problem = None, None
    if not args.no_verify:
        try:
            report = verify(art.path, reference=model, data=args.verify_data or _shared_set5())
        except RuntimeBackendError as e:  # e.g. an op the CoreML reference executor cannot run off macOS
            problem = str(e)
    obj = {
        "path": str(art.path),
        "manifest": str(art.manifest_path),
        "target": args.target,
        "precision": args.precision,
        "size_bytes": art.size_bytes,
        "verify": report.to_dict() if report else ({"passed": None, "error": problem} if problem else None),
    }
    text = f"wrote {art.path} ({art.size_bytes} bytes) and {art.manifest_path.name}"
    if problem:
        text += f"\nnot verified: {problem}"
    if report:
        verdict = "passed" if report.passed else "FAILED"
        text += (
            f"\nverify {verdict} ({report.criterion}): {report.psnr:.2f} dB vs HR "
            f"(float {report.psnr_float:.2f}), {report.psnr_vs_float:.1f} dB vs float"
        )
    emit(args, obj, text)
    return 1 if problem or (report is not None and not report.passed) else 0
