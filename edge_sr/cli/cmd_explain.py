"""`edge-sr explain`: local attribution maps (LAM) of an output window, side by side for float / deploy / FP16 /
INT8, with each map's diffusion index."""

from __future__ import annotations

import argparse

from edge_sr.cli._common import add_json_flag, add_model_flags, checkpoint_path, emit, model_source
from edge_sr.errors import ConfigError


def _box(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--box takes X,Y or X,Y,W,H (integers); got {text!r}") from None
    if len(vals) not in (2, 4):
        raise argparse.ArgumentTypeError(f"--box takes X,Y or X,Y,W,H; got {text!r}")
    return vals


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="local attribution maps (LAM) and diffusion index, float vs deploy / FP16 / INT8",
        description="LAM (Gu & Dong, CVPR 2021) of an output window: path-integrated gradients along a blur "
        "path from a Gaussian-blurred baseline to the image. An artifact is explained through its manifest's "
        "source checkpoint in the artifact's precision. Example: "
        "edge-sr explain edge_sr/weights/ecbsr_m4c16_x2.safetensors img.png --box 96,64 "
        "--compare float deploy int8 fp16 -o lam.png",
    )
    p.add_argument(
        "source",
        metavar="CKPT|ARTIFACT",
        type=checkpoint_path,
        help="a checkpoint (edge-sr, or foreign: detected), or an artifact with a manifest",
    )
    p.add_argument("image", metavar="IMAGE", help="the LR input image")
    p.add_argument(
        "--box",
        type=_box,
        help="X,Y[,W,H] of the output window in OUTPUT pixels (default W=H=16; default: centred)",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        choices=("float", "deploy", "fp16", "int8"),
        help="forms to explain side by side",
    )
    p.add_argument("--steps", type=int, default=50, help="path-integral steps")
    p.add_argument("--sigma-max", type=float, default=1.2, help="blur of the baseline in input pixels")
    p.add_argument(
        "--target", help="quantizer of the int8 form (default: the artifact's target, else executorch)"
    )
    p.add_argument("-o", "--out", help="the comparison PNG (default: none)")
    add_model_flags(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sr.explain import explain, save_figure

    if args.out and not args.out.lower().endswith(".png"):
        raise ConfigError(args.out, "the figure is a PNG; name it *.png")
    rep = explain(
        model_source(args, args.source), args.image, box=args.box, compare=tuple(args.compare or ()) or None, steps=args.steps,
        sigma_max=args.sigma_max, target=args.target,
    )  # fmt: skip
    obj = rep.to_dict()
    if args.out:
        obj["out"] = str(save_figure(rep, args.out))
    x, y, w, h = rep.box
    lines = [f"{rep.source}: LAM of box {x},{y},{w},{h} (x{rep.scale}, {rep.steps} steps)"]
    for name, m in obj["maps"].items():
        extra = (
            f", rel. L1 diff vs float {m['rel_l1_diff_vs_float']:.2e}" if "rel_l1_diff_vs_float" in m else ""
        )
        lines.append(f"  {name:7s} DI {m['di']:6.2f}  completeness gap {m['completeness_gap']:.2e}{extra}")
    lines += [f"  note: {n}" for n in rep.notes]
    if args.out:
        lines.append(f"-> {obj['out']}")
    emit(args, obj, "\n".join(lines))
    return 0
