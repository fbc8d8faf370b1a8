"""`edge-sr convert CKPT --target T`: export a checkpoint to a phone format, then verify it.

A video checkpoint exports its step (frame and state tensors, ``--input-size`` the LR frame) and is checked by
streaming a few synthetic moving frames through the artifact and the float model
(``edge_sr.runtime.stream.stream_agreement``); ``--json`` reports the manifest's ``stream`` entry.
"""

from __future__ import annotations

import argparse
from typing import Any

from torch import nn

from edge_sr.cli._common import (
    add_json_flag,
    add_model_flags,
    add_option_flag,
    checkpoint_path,
    emit,
    model_source,
    parse_hw,
    parse_range,
    target_options,
)
from edge_sr.convert import TARGETS
from edge_sr.convert.spec import IOS, LAYOUTS, PIXEL_SHUFFLE_MODES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help=f"export a checkpoint to {' / '.join(TARGETS)} and verify it")
    p.add_argument(
        "checkpoint",
        type=checkpoint_path,
        help="checkpoint: edge-sr .safetensors, or any .pth / .pt / .ckpt / .safetensors (architecture detected); "
        "train-form ones are fused first",
    )
    p.add_argument("--target", required=True, choices=list(TARGETS), help="the artifact format")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "fp16"],
        help="fp32 or fp16 (int8: `edge-sr quantize`)",
    )
    shape = p.add_mutually_exclusive_group()
    shape.add_argument(
        "--input-size", default="64x64", metavar="HxW", help="fixed input size (default 64x64)"
    )
    shape.add_argument("--dynamic", metavar="MIN:MAX", help="dynamic H and W within [MIN, MAX]")
    p.add_argument(
        "--frames",
        type=int,
        metavar="T",
        help="whole-clip / window video models (BasicVSR, IconVSR, BasicVSR++, EDVR): the fixed window of T "
        "frames (default 15; EDVR its own window)",
    )
    p.add_argument(
        "--output-size",
        metavar="HxW",
        help="arbitrary-scale models (LIIF): the artifact's output size for --input-size (any factor, baked in; "
        "one artifact per output size)",
    )
    p.add_argument("--layout", default="NCHW", choices=list(LAYOUTS), help="NCHW or NHWC I/O")
    p.add_argument("--io", default="tensor", choices=list(IOS), help="tensor, or image (coreml ImageType)")
    p.add_argument(
        "--pixel-shuffle", default="reshape", choices=list(PIXEL_SHUFFLE_MODES), help="pixel-shuffle lowering"
    )
    add_option_flag(p)
    p.add_argument("-o", "--output", default=".", help="artifact path or folder (default: current folder)")
    p.add_argument("--no-verify", action="store_true", help="skip the check on built-in images")
    add_model_flags(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sr.convert import ExportSpec, export
    from edge_sr.models import load_checkpoint
    from edge_sr.verify import verify

    options = target_options(args.target, args.option)  # bad options: fail before loading anything
    spec = ExportSpec(
        input_size=parse_hw(args.input_size),
        dynamic=parse_range(args.dynamic) if args.dynamic else None,
        precision=args.precision,
        layout=args.layout,
        io=args.io,
        pixel_shuffle=args.pixel_shuffle,
        frames=args.frames,
    )
    src = model_source(args, args.checkpoint)
    model = src if isinstance(src, nn.Module) else load_checkpoint(src)
    if args.output_size:  # without it an arbitrary-scale model exports at its card's factor
        return _fixed_size(args, model, spec, options)
    art = export(model, args.target, args.output, spec, source=args.checkpoint, options=options)
    if art.manifest.get("stream"):
        return _report_stream(args, art, model)
    if art.manifest.get("clip"):
        return _report_clip(args, art, model)
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


def _fixed_size(args: argparse.Namespace, model: nn.Module, spec: Any, options: Any) -> int:
    """An arbitrary-scale model exported for one input and one output size, checked against PyTorch."""
    from edge_sr.convert import export
    from edge_sr.errors import ConfigError
    from edge_sr.models.liif import FixedSizeLIIF
    from edge_sr.verify import verify_fixed_size

    if not getattr(model, "arbitrary_scale", False):
        raise ConfigError(
            None, "--output-size is for arbitrary-scale models (LIIF); this model has one factor"
        )
    if spec.dynamic:
        raise ConfigError(None, "an arbitrary-scale artifact has fixed sizes: --input-size, not --dynamic")
    out_size = parse_hw(args.output_size)
    if min(out_size) < 1:
        raise ConfigError(None, f"--output-size {args.output_size} must be positive")
    fixed = FixedSizeLIIF(model, spec.input_size, out_size)  # type: ignore[arg-type]
    art = export(fixed, args.target, args.output, spec, source=args.checkpoint, options=options)
    check = None if args.no_verify else verify_fixed_size(art.path, fixed)
    sizes = {"input_size": list(spec.input_size), "output_size": list(out_size)}
    return _emit_checked(args, art, sizes, f"\nfixed size: {spec.input_size} -> {out_size}", check, "")


def _report_stream(args: argparse.Namespace, art: Any, model: nn.Module) -> int:
    """A video step: the artifact streamed against the float model, judged by verify's thresholds."""
    from edge_sr.runtime import from_model, load
    from edge_sr.runtime.stream import stream_agreement
    from edge_sr.verify import judge_agreement

    check = None
    if not args.no_verify:
        check = judge_agreement(stream_agreement(load(art.path), from_model(model)), args.precision)
    st = art.manifest["stream"]
    names = ", ".join(t["name"] for t in st["tensors"] if t["io"] == "input")
    outs = ", ".join(t["name"] for t in st["tensors"] if t["io"] == "output")
    head = f"\nvideo step at {st['size'][0]}x{st['size'][1]}: ({names}) -> ({outs})"
    how = f" streaming {check['frames']} frames" if check else ""
    return _emit_checked(args, art, {"stream": st}, head, check, how)


def _report_clip(args: argparse.Namespace, art: Any, model: nn.Module) -> int:
    """A whole-clip / window model: one window of moving frames through the artifact and the float model,
    judged by verify's thresholds."""
    from edge_sr.runtime import clip_agreement, load
    from edge_sr.verify import judge_agreement

    check = None if args.no_verify else judge_agreement(clip_agreement(load(art.path), model), args.precision)
    c = art.manifest["clip"]
    h, w = art.manifest["input_shape"]["size"]
    head = (
        f"\n{c['kind']} model: a window of {c['frames']} frames at {h}x{w} (run_clip overlap {c['overlap']})"
    )
    return _emit_checked(args, art, {"clip": c}, head, check, " on one window")


def _emit_checked(
    args: argparse.Namespace,
    art: Any,
    extra: dict[str, Any],
    head: str,
    check: dict[str, Any] | None,
    how: str,
) -> int:
    """The JSON object / text of an artifact checked against its float model (``judge_agreement``); exit 1 when
    the check failed."""
    obj = {
        "path": str(art.path),
        "manifest": str(art.manifest_path),
        "target": args.target,
        "precision": args.precision,
        "size_bytes": art.size_bytes,
        **extra,
        "verify": check,
    }
    text = f"wrote {art.path} ({art.size_bytes} bytes) and {art.manifest_path.name}{head}"
    if check:
        verdict = "passed" if check["passed"] else "FAILED"
        text += f"\nverify {verdict} ({check['criterion']}){how}: "
        text += f"{check['psnr_vs_float']:.1f} dB vs float, max abs diff {check['max_abs_diff']:.2e}"
    emit(args, obj, text)
    return 0 if check is None or check["passed"] else 1
