"""``edge-sr train CONFIG [--set key=value ...] [--resume] [--init CKPT]``.

An image model trains on patches; a video (streaming) model, e.g. ``model.name: rrn_edge``, on clips of
``data.video.frames`` frames (``configs/rrn_edge_x4.yaml``).

Under ``torchrun --nproc_per_node N -m edge_sr.cli train ...`` each rank trains its share of every global
batch (the process group is set up by :func:`edge_sr.train.ddp.launch`).
"""

from __future__ import annotations

import argparse

from edge_sr.cli._common import add_json_flag, checkpoint_path, emit


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an image or video model from a YAML/TOML recipe (see configs/)")
    p.add_argument("config", help="recipe file (.yaml, .yml or .toml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=1e-3 (repeatable)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in out_dir from its last checkpoint (resume.pt), bit-exactly",
    )
    p.add_argument(
        "--init",
        metavar="CKPT",
        type=checkpoint_path,
        help="start from these weights (matching names and shapes); a path or a bundled file's name",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sr.train import export_run_summary, launch, load_config

    cfg = load_config(args.config, args.overrides)
    result = launch(cfg, resume=args.resume, init=args.init, progress=not args.no_progress)
    best = (
        f"best val PSNR {result.best_psnr:.3f} dB at step {result.best_step}"
        if result.best_psnr
        else "no validation"
    )
    emit(
        args,
        export_run_summary(result, cfg),
        f"{result.run_dir}: {result.step} steps in {result.seconds:.0f} s; {best}",
    )
    return 130 if result.interrupted else 0
