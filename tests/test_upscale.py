"""`upscale_files` / `edge-sr upscale`: formats, batches with bad files, errors, precision guard, memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edge_sr.cli import main
from edge_sr.data.io import BT601_LUMA, read_image, write_image
from edge_sr.errors import ConfigError
from edge_sr.models import create_model, load_checkpoint, save_checkpoint
from edge_sr.upscale import TileRunner, check_tile, upscale_files

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(create_model("ecbsr_m4c8", scale=2, blocks=1), d / "tiny_x2.safetensors")


def _photo(h: int = 24, w: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip(np.stack([xx / w, yy / h, (xx + yy) / (h + w)], -1) + 0.05 * RNG.random((h, w, 3)), 0, 1)


CASES = {  # name -> (rgb, alpha, bit depth, gray)
    "rgb.png": (_photo(), None, 8, False),
    "rgb.jpg": (_photo(), None, 8, False),
    "rgb.webp": (_photo(), None, 8, False),
    "rgb.tif": (_photo(), None, 8, False),
    "rgb16.png": (_photo(), None, 16, False),
    "rgb16.tiff": (_photo(), None, 16, False),
    "gray.png": (_photo()[..., 0], None, 8, True),
    "gray16.png": (_photo()[..., 1], None, 16, True),
    "rgba.png": (_photo(), _photo()[..., 2], 8, False),
    "graya16.png": (_photo()[..., 0], _photo()[..., 1], 16, True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_formats_are_kept(tmp_path: Path, ckpt: Path, name: str) -> None:
    rgb, alpha, bits, gray = CASES[name]
    src = write_image(tmp_path / "in" / name, rgb, alpha, bit_depth=bits, gray=gray)
    rep = upscale_files([src], tmp_path / "out", checkpoint=ckpt, tile=16, tile_overlap=6, progress=False)
    assert rep.exit_code == 0, rep.failed
    out = read_image(tmp_path / "out" / name)
    assert (
        out.size == (48, 64)
        and out.bit_depth == bits
        and out.was_gray == gray
        and out.format == read_image(src).format
    )
    assert (out.alpha is None) == (alpha is None)
    # Tiled file output equals the model applied to the whole image (after the file's own quantization).
    net = load_checkpoint(ckpt)
    x = torch.from_numpy(read_image(src).rgb).permute(2, 0, 1)[None]
    with torch.no_grad():
        ref = net(x)[0].permute(1, 2, 0).numpy()
    if gray:
        ref = np.repeat((ref @ np.array(BT601_LUMA, np.float32))[..., None], 3, -1)  # luma, then clip
    ref = np.clip(ref, 0, 1)
    if name.endswith((".jpg", ".webp")):
        # lossy: the reference goes through the same encoder (an untrained net's output is noise, which
        # JPEG / WebP cannot hold at any quality), so only the tiling difference is measured
        ref = read_image(write_image(tmp_path / "ref" / name, ref)).rgb
        assert np.mean(np.abs(out.rgb - ref)) <= 2 / 255
    else:
        assert np.max(np.abs(out.rgb - ref)) <= 1 / 255 + 1e-6


def test_exif_rotated_input_and_output_format_from_extension(tmp_path: Path, ckpt: Path) -> None:
    from PIL import Image as PILImage

    pil = PILImage.fromarray((_photo(16, 28) * 255).astype(np.uint8))
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    src = tmp_path / "rot.jpg"
    pil.save(src, exif=exif.tobytes())
    rep = upscale_files(
        [src], tmp_path / "o" / "rot.webp", checkpoint=ckpt, tile=32, tile_overlap=6, progress=False
    )
    assert rep.exit_code == 0
    out = read_image(tmp_path / "o" / "rot.webp")
    assert out.format == "WEBP" and out.size == (56, 32)


def test_batch_with_bad_files(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    good = [write_image(src / f"ok{i}.png", _photo(20, 20)) for i in range(2)]
    (src / "empty.png").write_bytes(b"")
    (src / "corrupt.png").write_bytes(good[0].read_bytes()[:100])
    out = tmp_path / "out"
    args = [
        "upscale",
        str(src),
        "-o",
        str(out),
        "--checkpoint",
        str(ckpt),
        "--tile",
        "32",
        "--tile-overlap",
        "6",
    ]
    assert main([*args, "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["written"] == 2 and rep["failed"] == 2
    errors = {Path(f["input"]).name: f["error"] for f in rep["files"] if not f["ok"]}
    assert set(errors) == {"empty.png", "corrupt.png"}
    assert all("\n" not in e and Path(n).name in e for n, e in errors.items())
    assert sorted(p.name for p in out.iterdir()) == ["ok0.png", "ok1.png"]  # no temporary files left
    # Only bad inputs: exit 2.
    assert (
        main(
            [
                "upscale",
                str(src / "empty.png"),
                str(src / "corrupt.png"),
                "-o",
                str(out),
                "--checkpoint",
                str(ckpt),
            ]
        )
        == 2
    )


def test_setup_errors_exit_2(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_image(tmp_path / "a.png", _photo(16, 16))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should go")
    cases = [
        (["-o", str(blocker / "out"), "--checkpoint", str(ckpt)], "output folder"),
        (["-o", str(tmp_path / "o"), "--checkpoint", str(ckpt), "--scale", "4"], "x2"),
        (["-o", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "nope.safetensors")], "no such file"),
        (
            ["-o", str(tmp_path / "o"), "--checkpoint", str(ckpt), "--tile", "16", "--tile-overlap", "8"],
            "tile",
        ),
    ]
    for extra, words in cases:
        assert main(["upscale", str(src), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and words in err, err
    assert (
        main(
            [
                "upscale",
                str(tmp_path / "empty_dir_does_not_exist"),
                "-o",
                str(tmp_path / "o"),
                "--checkpoint",
                str(ckpt),
            ]
        )
        == 2
    )


def test_min_tile_size_of_window_models(ckpt: Path) -> None:
    net = load_checkpoint(ckpt)
    net.min_tile_size = 64  # what windowed transformers expose
    with pytest.raises(ConfigError, match="window"):
        check_tile(net, 32, 4)
    check_tile(net, 64, 4)


class _Overflow(nn.Module):
    """Correct in FP32, inf in FP16: an intermediate of 1e6 overflows half precision (max 65504)."""

    scale = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = torch.nn.functional.conv2d(x, torch.full((3, 3, 1, 1), 1e6 / 3))
        return torch.nn.functional.interpolate(big * 1e-6, scale_factor=2, mode="nearest")


def test_fp16_guard_recomputes_broken_tiles_in_fp32() -> None:
    x = torch.rand(3, 3, 8, 8)
    runner = TileRunner(_Overflow(), precision="fp16")
    with torch.autocast("cpu", dtype=torch.float16):
        assert not torch.isfinite(_Overflow()(x)).all()  # the premise: FP16 overflows here
    y = runner(x)
    assert runner.fallbacks == 3 and torch.isfinite(y).all()
    torch.testing.assert_close(y, _Overflow()(x))
    bf = TileRunner(_Overflow(), precision="bf16")  # bf16 has FP32's range: no fallback needed
    assert torch.isfinite(bf(x)).all() and bf.fallbacks == 0


def test_out_of_memory_retries_with_half_tile(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = TileRunner.__call__

    def fake(self: TileRunner, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 16:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, x)

    monkeypatch.setattr(TileRunner, "__call__", fake)
    src = write_image(tmp_path / "a.png", _photo(24, 24))
    rep = upscale_files([src], tmp_path / "o", checkpoint=ckpt, tile=32, tile_overlap=4, progress=False)
    assert rep.exit_code == 0 and rep.tile == 16
    assert any("retrying with --tile 16" in n for n in rep.notes)


@pytest.mark.gpu
def test_cuda_fp16_matches_fp32(tmp_path: Path, ckpt: Path) -> None:
    src = write_image(tmp_path / "a.png", _photo(64, 64))
    kw = dict(checkpoint=ckpt, tile=32, tile_overlap=6, tile_batch=4, progress=False)
    upscale_files([src], tmp_path / "a32", device="cuda", precision="fp32", **kw)  # type: ignore[arg-type]
    upscale_files([src], tmp_path / "a16", device="cuda", precision="fp16", **kw)  # type: ignore[arg-type]
    a, b = read_image(tmp_path / "a32" / "a.png").rgb, read_image(tmp_path / "a16" / "a.png").rgb
    assert np.abs(a - b).max() <= 2 / 255


def test_4000x3000_photo_stays_far_under_2_gb(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    from edge_sr.reparam import reparameterize

    torch.manual_seed(0)  # a x4 model, as small as possible: the test measures memory, not quality
    ckpt = save_checkpoint(
        reparameterize(create_model("ecbsr_m4c8", scale=4, blocks=1, channels=4)),
        tmp_path / "m.safetensors",
        arch="ecbsr_m4c8",
        args={"scale": 4, "blocks": 1, "channels": 4},
        form="deploy",
    )
    yy, xx = np.mgrid[0:3000, 0:4000]
    img = np.stack([xx * 255 // 4000, yy * 255 // 3000, (xx + yy) % 256], -1).astype(np.uint8)
    PILImage.fromarray(img).save(tmp_path / "big.png", compress_level=1)
    del img, xx, yy
    code = textwrap.dedent(f"""
        import resource, sys
        from edge_sr.upscale import load_model, upscale_files
        load_model({str(ckpt)!r})  # imports and model: the baseline
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rep = upscale_files([{str(tmp_path / "big.png")!r}], {str(tmp_path / "out")!r},
                            checkpoint={str(ckpt)!r}, tile=512, tile_overlap=4, progress=False)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(rep.exit_code, (peak - base) * 1024)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-2000:]
    code_, growth = map(int, run.stdout.split())
    assert code_ == 0
    out = tmp_path / "out" / "big.png"
    head = out.read_bytes()[:24]  # PNG signature, then IHDR: width and height (PIL refuses 192 MP)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == (16000, 12000)
    # The 16000x12000 RGB result alone would be 576 MB as uint8: it goes to the PNG encoder one band of
    # tile rows at a time instead (2016 rows x 16000 x 3 = 97 MB here, plus the tile's float output and the
    # 36 MB uint8 input). Measured: 355 MB of growth; the whole image in memory was over 900 MB.
    assert growth < 560 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MB"


def test_without_out_writes_beside_the_input(tmp_path: Path, ckpt: Path) -> None:
    src = write_image(tmp_path / "photo.jpg", _photo(20, 20))
    rep = upscale_files([src], checkpoint=ckpt, tile=32, tile_overlap=6, progress=False)
    assert rep.exit_code == 0 and rep.files[0].output == str(tmp_path / "photo_x2.jpg")
    assert read_image(tmp_path / "photo_x2.jpg").size == (40, 40) and read_image(src).size == (20, 20)


def test_rerun_over_a_folder_skips_its_earlier_outputs(tmp_path: Path, ckpt: Path) -> None:
    """Without -o the results land in the input folder; a second run over that folder must not upscale
    them again (photo_x2_x2.png), while a file that only looks like an output is still taken."""
    write_image(tmp_path / "photo.png", _photo(20, 20))
    write_image(tmp_path / "lone_x2.png", _photo(12, 12))  # no lone.png beside it: a real input
    first = upscale_files([tmp_path], checkpoint=ckpt, tile=32, tile_overlap=6, progress=False)
    assert sorted(Path(f.output).name for f in first.files) == ["lone_x2_x2.png", "photo_x2.png"]
    again = upscale_files([tmp_path], checkpoint=ckpt, tile=32, tile_overlap=6, progress=False)
    assert sorted(Path(f.input).name for f in again.files) == ["lone_x2.png", "photo.png"]
    assert not (tmp_path / "photo_x2_x2.png").exists()
