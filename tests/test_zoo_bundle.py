"""``python -m edge_sr.zoo bundle``: a run's best checkpoint into the package, its recipe, steps and (for a video
model) the degradation it was trained for in the metadata; ``eval`` warns when that degradation is not the data's."""

from __future__ import annotations

import json
import logging

import edge_sr.zoo
from edge_sr.evaluate_video import _warn_degradation
from edge_sr.models import create_model, load_checkpoint, save_checkpoint
from edge_sr.models.checkpoint import read_metadata


def _run(tmp_path, degradation: str | None):  # noqa: ANN202
    run = tmp_path / "runs" / "tiny_video"
    run.mkdir(parents=True)
    net = create_model("ecbvsr_m4c16", scale=4, channels=4, blocks=1, collapsed=True)
    save_checkpoint(net, run / "best.safetensors", extra={"step": "40", "val_psnr": "28.5"})
    video = f"\n    degradation: {degradation}" if degradation else ""
    (run / "config.yaml").write_text(f"model:\n  name: ecbvsr_m4c16\ndata:\n  video:\n    frames: 7{video}\n")
    (run / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "elapsed_s": s / 10}) for s in (20, 40, 60))
    )
    return run, net


def test_bundle_writes_name_recipe_steps_and_degradation(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(edge_sr.zoo, "WEIGHTS_DIR", tmp_path)
    run, net = _run(tmp_path, "BD")
    out = edge_sr.zoo.bundle(run, name="tiny_bd", init="ecbsr_m4c16_x4")
    assert out == tmp_path / "tiny_bd_x4.safetensors"
    meta = read_metadata(out)
    assert meta["arch"] == "ecbvsr_m4c16" and "collapsed" not in meta["args"]
    assert (meta["step"], meta["train_steps"], meta["recipe"]) == ("40", "60", "configs/tiny_video.yaml")
    assert meta["degradation"] == "BD" and meta["init"] == "ecbsr_m4c16_x4"
    assert load_checkpoint(out).state_dict().keys() == net.state_dict().keys()
    with caplog.at_level(logging.WARNING, logger="edge_sr.evaluate_video"):
        _warn_degradation(out, 4, "BD")
        assert not caplog.records
        _warn_degradation(str(out), 4, "BI")
        _warn_degradation(load_checkpoint(out), 4, "BI")  # a model loaded from the file: its card names it
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["tiny_bd_x4.safetensors was trained for BD LR frames; these are BI"] * 2


def test_a_video_recipe_without_degradation_is_bi(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(edge_sr.zoo, "WEIGHTS_DIR", tmp_path)
    run, _ = _run(tmp_path, None)
    assert read_metadata(edge_sr.zoo.bundle(run))["degradation"] == "BI"


def test_wall_time_adds_up_the_sittings_of_a_resumed_run() -> None:
    from edge_sr.zoo import _wall_seconds

    straight = [{"step": 100, "elapsed_s": 10.0}, {"step": 200, "elapsed_s": 20.0}]
    resumed = [*straight, {"step": 300, "elapsed_s": 4.0}, {"step": 400, "elapsed_s": 15.5}]
    assert _wall_seconds(straight) == 20.0 and _wall_seconds(resumed) == 35.5 and _wall_seconds([]) == 0.0
