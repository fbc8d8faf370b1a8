"""Training pipeline: configs, exact resume, --init, DDP, bad input, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import DATA_ROOT
from safetensors.torch import load_file

from edge_sr.cli import main
from edge_sr.errors import ConfigError, InputError
from edge_sr.train import TrainConfig, load_config, train
from edge_sr.train.config import apply_overrides

DATA = DATA_ROOT
T91 = DATA / "train" / "T91"
REPO = Path(__file__).resolve().parents[1]


def _write_cfg(tmp_path: Path, iters: int = 8, **extra: object) -> Path:
    import yaml

    cfg = {
        "model": {"name": "ecbsr_m4c8", "scale": 2, "args": {"collapsed": True}},
        "data": {
            "train_folders": [str(T91)],
            "patch_size": 12,
            "batch_size": 3,
            "holdout": 2,
            "val_max_size": 48,
            "augment": {"mixup": 0.5, "cutmix": 0.5, "blend": 0.3, "rgb_shuffle": 0.5},
        },
        "iters": iters,
        "val_every": 4,
        "save_every": 2,
        "log_every": 1,
        "out_dir": str(tmp_path / "run"),
        "threads": 1,
    }
    for k, v in extra.items():
        cfg[k] = v
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_config_unknown_key_and_types(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("model: {name: ecbsr_m4c8}\nitres: 5\n")
    with pytest.raises(ConfigError, match="itres"):
        load_config(p)
    with pytest.raises(ConfigError, match="optim.lr"):
        apply_overrides(TrainConfig(), ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="optimizer"):
        apply_overrides(TrainConfig(), ["optim.optimizer=sgd"])
    cfg = apply_overrides(TrainConfig(), ["optim.lr=1e-3", "iters=7", "model.args.collapsed=true"])
    assert cfg.optim.lr == 1e-3 and cfg.iters == 7 and cfg.model.args == {"collapsed": True}
    toml = tmp_path / "c.toml"
    toml.write_text('iters = 3\n[model]\nname = "espcn"\n')
    assert load_config(toml).model.name == "espcn"


def test_resume_is_bit_exact(tmp_path: Path) -> None:
    straight = load_config(_write_cfg(tmp_path / "a", iters=8))
    train(straight, progress=False)
    halves = load_config(_write_cfg(tmp_path / "b", iters=8))
    r1 = train(halves, progress=False, until=4)
    assert r1.step == 4
    r2 = train(halves, progress=False, resume=True)
    assert r2.step == 8
    a = load_file(str(tmp_path / "a" / "run" / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "last.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ea = load_file(str(tmp_path / "a" / "run" / "last_ema.safetensors"))
    eb = load_file(str(tmp_path / "b" / "run" / "last_ema.safetensors"))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    # and training changed the weights at all
    init = load_file(str(tmp_path / "a" / "run" / "best.safetensors"))
    assert (tmp_path / "a" / "run" / "config.yaml").is_file()
    lines = [json.loads(x) for x in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("val_psnr" in r for r in lines) and all(r["loss"] > 0 for r in lines if "loss" in r)
    assert init.keys() == a.keys()


def test_init_reports_loaded_and_new(tmp_path: Path) -> None:
    cfg = load_config(_write_cfg(tmp_path / "x2", iters=2))
    train(cfg, progress=False)
    from edge_sr.models import create_model
    from edge_sr.train import init_from

    m4 = create_model("ecbsr_m4c8", scale=4)
    report = init_from(m4, str(tmp_path / "x2" / "run" / "last.safetensors"))
    assert any(k.startswith("backbone.0.") for k in report.loaded)
    assert any(k.startswith("backbone.5.") for k in report.new)  # tail: 3·s² outputs differ from x2
    assert not set(report.loaded) & set(report.new)
    # through train(): the run records what --init loaded, and the bundle keeps the --init path
    cfg4 = load_config(_write_cfg(tmp_path / "x4", iters=2))
    cfg4.model.scale = 4
    src = str(tmp_path / "x2" / "run" / "last.safetensors")
    train(cfg4, progress=False, init=src)
    rec = json.loads((tmp_path / "x4" / "run" / "init.json").read_text())
    assert rec["init"] == src and rec["loaded"] and any(k.startswith("backbone.5.") for k in rec["new"])


def test_bad_input_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = load_config(_write_cfg(tmp_path, iters=2))
    cfg.data.train_folders = [str(empty)]
    with pytest.raises(InputError, match="no images"):
        train(cfg, progress=False)
    cfg.data.train_folders = [str(T91)]
    cfg.data.skip_small, cfg.data.patch_size = False, 60  # T91 has 78x78 images < 120
    with pytest.raises(InputError, match="smaller than the HR patch"):
        train(cfg, progress=False)
    cfg.data.patch_size, cfg.data.val_dir = 12, str(tmp_path)
    with pytest.raises(InputError, match="no HR/"):
        train(cfg, progress=False)
    path = _write_cfg(tmp_path, iters=2)
    assert main(["train", str(path), "--set", "model.name=nope", "--no-progress"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_train_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_cfg(tmp_path, iters=2)
    assert main(["train", str(path), "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step"] == 2 and out["best_psnr"] > 10


def test_ddp_two_cpu_ranks_stay_in_sync(tmp_path: Path) -> None:
    path = _write_cfg(tmp_path, iters=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "edge_sr.cli",
        "train",
        str(path),
        "--no-progress",
        "--json",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(outs) == 2 and all(o["ranks_in_sync"] is True and o["step"] == 4 for o in outs)


def test_ctrl_c_saves_and_exits_cleanly(tmp_path: Path) -> None:
    path = _write_cfg(tmp_path, iters=100000, save_every=100000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_sr.cli", "train", str(path), "--no-progress"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert (tmp_path / "run" / "resume.pt").is_file()
    assert not list((tmp_path / "run").glob(".*tmp*"))
    state = torch.load(tmp_path / "run" / "resume.pt", weights_only=True)
    assert state["step"] >= 3


def test_distill_teacher_terms_and_refusals(tmp_path: Path) -> None:
    """Output and attention-transfer distillation: zero when the student is the teacher, gradients to the
    student only, a training run through ``distill:``, and one-line refusals before anything is written."""
    from edge_sr.models import load_checkpoint
    from edge_sr.train.distill import DistillConfig, Distiller, attention_map
    from edge_sr.train.parts import l1_loss

    teacher_cfg = load_config(_write_cfg(tmp_path / "t", iters=2))
    train(teacher_cfg, progress=False)
    teacher_file = str(tmp_path / "t" / "run" / "last.safetensors")

    # attention maps ignore the channel count and a feature's scale, not its spatial layout
    f = torch.rand(2, 16, 6, 6)
    assert torch.allclose(attention_map(f), attention_map(3 * f), atol=1e-6)
    assert torch.allclose(attention_map(f), attention_map(torch.cat([f, f], 1)), atol=1e-6)
    assert not torch.allclose(attention_map(f), attention_map(f.flip(-1)))

    pairs = [["backbone.1", "backbone.1"], ["backbone.3", "backbone.3"]]
    cfg = DistillConfig(teacher=teacher_file, gt_weight=0.0, features=pairs, feature_weight=1.0)
    same = load_checkpoint(teacher_file).train()
    d = Distiller(cfg, same, scale=2, device=torch.device("cpu"))
    # a tapped teacher keeps its module names and runs each block's fused kernel (the same function), also
    # when its file was saved from the branch form
    from edge_sr.models import create_model, save_checkpoint

    branchy = create_model("ecbsr_m4c8", scale=2)
    branchy.load_state_dict(same.state_dict())
    assert not any(getattr(m, "collapsed", False) for m in branchy.modules())
    cfg_b = DistillConfig(teacher=str(save_checkpoint(branchy, tmp_path / "b.safetensors")), features=pairs)
    teacher = Distiller(cfg_b, same, scale=2, device=torch.device("cpu")).teacher
    flags = [m.collapsed for m in teacher.modules() if isinstance(getattr(m, "collapsed", None), bool)]
    assert flags and all(flags)
    lr, hr = torch.rand(2, 3, 10, 10), torch.rand(2, 3, 20, 20)
    assert float(d.loss(same, lr, hr, l1_loss)) < 1e-6
    other = load_checkpoint(teacher_file).train()
    with torch.no_grad():
        other.backbone[1].conv3x3.weight.mul_(1.5)  # type: ignore[index]
    d = Distiller(cfg, other, scale=2, device=torch.device("cpu"))
    loss = d.loss(other, lr, hr, l1_loss)
    assert float(loss) > 1e-4
    loss.backward()
    assert other.backbone[1].conv3x3.weight.grad is not None  # type: ignore[index]
    assert all(p.grad is None for p in d.teacher.parameters())
    # without taps the teacher runs fused (its deploy form): the same outputs as the train form
    fused = Distiller(
        DistillConfig(teacher=teacher_file, gt_weight=0.0), same, scale=2, device=torch.device("cpu")
    )
    assert not any(n.startswith("backbone") for n, _ in fused.teacher.named_children())
    assert float(fused.loss(same, lr, hr, l1_loss)) < 1e-5
    # the gt term alone is the plain loss
    plain = Distiller(
        DistillConfig(teacher=teacher_file, output_weight=0.0), other, scale=2, device=torch.device("cpu")
    )
    assert torch.allclose(plain.loss(other, lr, hr, l1_loss), l1_loss(other(lr), hr))

    # a run with a teacher: finite losses logged, the student's checkpoint saved
    run_cfg = _write_cfg(tmp_path / "s", iters=3)
    cfg_s = load_config(run_cfg)
    cfg_s.distill = DistillConfig(teacher=teacher_file, features=pairs, feature_weight=0.5)
    result = train(cfg_s, progress=False)
    assert result.step == 3 and (tmp_path / "s" / "run" / "last.safetensors").is_file()
    lines = [json.loads(x) for x in (tmp_path / "s" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in lines if "loss" in r)

    # refusals, each before the run folder exists
    for distill, match in [
        (DistillConfig(teacher=str(tmp_path / "none.safetensors")), "distill.teacher"),
        (
            DistillConfig(teacher=teacher_file, features=[["backbone.9", "backbone.1"]], feature_weight=1),
            "backbone.9",
        ),
        (DistillConfig(teacher=teacher_file, gt_weight=0, output_weight=0), "distill.gt_weight"),
    ]:
        bad = load_config(_write_cfg(tmp_path / "bad", iters=2))
        bad.distill = distill
        with pytest.raises(ConfigError, match=match):
            train(bad, progress=False)
        assert not (tmp_path / "bad" / "run").exists()
    x4 = load_config(_write_cfg(tmp_path / "x4", iters=2))
    x4.model.scale, x4.distill = 4, DistillConfig(teacher=teacher_file)
    with pytest.raises(ConfigError, match="x2 model; the student is x4"):
        train(x4, progress=False)


@pytest.mark.parametrize("recipe", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_is_valid(recipe: Path) -> None:
    """Each recipe in configs/ parses, type-checks and passes the range checks (the model built and run on a
    patch on ``meta``); a teacher another recipe trains first need not exist yet."""
    cfg = load_config(recipe)
    assert cfg.out_dir == f"runs/{recipe.stem}", "a recipe writes runs/<its name>"


def test_train_only_freezes_every_other_parameter() -> None:
    """``optim.train_only``: one optimizer step moves the named parameters and leaves the rest bit-equal."""
    from edge_sr.models import create_model
    from edge_sr.train.config import OptimConfig
    from edge_sr.train.parts import make_optimizer

    torch.manual_seed(0)
    m = create_model("ecbvsr_m4c16", scale=2, channels=4, blocks=1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = make_optimizer(m, OptimConfig(lr=1e-2, train_only=["state_in", "conv_h"]))
    x = torch.rand(2, 3, 8, 8)
    sr, h = m(x, torch.rand_like(x), torch.rand(2, 4, 8, 8))
    (sr.mean() + h.mean()).backward()
    opt.step()
    after = m.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(("state_in.", "conv_h.")) for k in moved), moved
    assert {"state_in.weight", "conv_h.weight"} <= moved
    with pytest.raises(ConfigError, match="names no parameter"):
        make_optimizer(m, OptimConfig(train_only=["head"]))


def test_ycbcr_loss_weighs_the_metric_planes(tmp_path: Path) -> None:
    """``loss_ycbcr``: the loss on Y, Cb, Cr as the Y-PSNR metric converts them; an error of chroma alone costs
    nothing with weights (1, 0, 0); a run trains with it; a one-channel model is refused."""
    import numpy as np

    from edge_sr.metrics import RGB_MATRIX, rgb_to_ycbcr
    from edge_sr.train.parts import l1_loss, ycbcr_loss

    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 6, 6, dtype=torch.float64), torch.rand(2, 3, 6, 6, dtype=torch.float64)
    ya, yb = (rgb_to_ycbcr(x.permute(0, 2, 3, 1).numpy(), peak=1.0) for x in (a, b))
    per_plane = np.abs(ya - yb).mean(axis=(0, 1, 2))
    assert ycbcr_loss(l1_loss, (1.0, 0.5, 0.25))(a, b).item() == pytest.approx(
        per_plane @ np.array([1.0, 0.5, 0.25]), rel=1e-12
    )
    # the RGB of a shift of Cb and Cr alone
    chroma = torch.from_numpy(RGB_MATRIX @ np.array([0.0, 0.05, -0.03]))[:, None, None]
    assert ycbcr_loss(l1_loss, (1.0, 0.0, 0.0))(a, a + chroma).item() < 1e-12
    assert ycbcr_loss(l1_loss, (0.0, 1.0, 0.0))(a, a + chroma).item() == pytest.approx(0.05)
    five_d = torch.rand(2, 4, 3, 6, 6)  # video batches: (B, T, C, H, W)
    assert ycbcr_loss(l1_loss, (1.0, 1.0, 1.0))(five_d, five_d).item() == 0.0
    with pytest.raises(ConfigError, match="RGB model"):
        ycbcr_loss(l1_loss, (1.0, 0.0, 0.0))(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4))

    out = train(load_config(_write_cfg(tmp_path, iters=4, loss_ycbcr=[1.0, 0.2, 0.2])), progress=False)
    lines = [json.loads(line) for line in (out.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert out.step == 4 and all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in lines if "loss" in r)


def test_hr_scales_train_and_are_refused_where_they_cannot_apply(tmp_path: Path) -> None:
    """A run with ``data.hr_scales`` trains; paired folders, arbitrary-scale samples and a video model have no HR
    folder images to reduce; YCbCr weights need an RGB model. Each refusal names the recipe and the field."""
    from edge_sr.train.loop import _build_data

    cfg = load_config(_write_cfg(tmp_path, iters=2))
    cfg.data.hr_scales = [1.0, 0.7]
    dataset, _ = _build_data(cfg)
    assert sum(n.endswith("(x0.7)") for n in dataset.names) == len(dataset.names) // 2
    assert train(cfg, progress=False).step == 2
    data = {"train_folders": [str(T91)], "patch_size": 12, "batch_size": 2, "hr_scales": [1.0, 0.8]}
    for model, extra, words in [
        ({"name": "ecbsr_m4c8", "scale": 2}, {"paired": str(tmp_path)}, "with data.paired"),
        ({"name": "ecbvsr_m4c16", "scale": 2}, {}, "for a video model"),
        ({"name": "ecbsr_m4c8", "scale": 2}, {"scale_range": [1.5, 3.0]}, "with data.scale_range"),
    ]:
        path = _write_cfg(tmp_path / words.replace(" ", "_"), model=model, data={**data, **extra})
        with pytest.raises(ConfigError, match=f"cfg.yaml: data.hr_scales is .*{words}"):
            load_config(path)
    y_model = {"name": "ecbsr_m4c8", "scale": 2, "args": {"colors": 1}}
    gray = _write_cfg(tmp_path / "gray", model=y_model, loss_ycbcr=[1.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match="loss_ycbcr is .*an RGB model"):
        load_config(gray)
    coords = _write_cfg(
        tmp_path / "coords",
        data={**data, "hr_scales": [1.0], "scale_range": [1.5, 3.0]},
        loss_ycbcr=[1.0, 0.1, 0.1],
    )
    with pytest.raises(ConfigError, match="loss_ycbcr is .*arbitrary-scale run"):
        load_config(coords)
