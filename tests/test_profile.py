"""`edge-sr profile`: local backends on tiny artifacts, MAC counting, the CPU peaks (theoretical from a canned
cpuinfo, measured and cached only when settled and idle, the refusal above 100 %), and the adb path against
recorded outputs of benchmark_model / executor_runner with a fake `adb` on PATH."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from edge_sr.convert.tflite import tflite_delegated
from torch import nn

from edge_sr.cli import main
from edge_sr.errors import RuntimeBackendError
from edge_sr.profile import count_macs, latency_stats, profile
from edge_sr.profile import peak as peak_mod
from edge_sr.profile.adb import build_commands, parse_benchmark_model, parse_executor_runner, profile_adb
from edge_sr.profile.peak import PeakWarning, measure_peak, parse_cpuinfo, percent_of, theoretical_peak

FIXTURES = Path(__file__).parent / "fixtures"
ARGS = {"scale": 2, "blocks": 1, "channels": 4}
HW = (16, 24)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A deploy-form ECBSR (1 block, 4 channels, x2) exported to ONNX, ExecuTorch and TFLite, each with
    a manifest that names its architecture and fixed input size."""
    from edge_sr.models import create_model
    from edge_sr.reparam import reparameterize

    d = tmp_path_factory.mktemp("profile")
    model = reparameterize(create_model("ecbsr_m4c8", **ARGS).eval())
    x = torch.rand(1, 3, *HW)
    out = {}
    torch.onnx.export(model, (x,), str(d / "m.onnx"), dynamo=True, external_data=False)
    out["onnx"] = d / "m.onnx"

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    ep = torch.export.export(model, (x,))
    (d / "m.pte").write_bytes(
        to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    )
    out["executorch"] = d / "m.pte"

    import litert_torch

    litert_torch.convert(model, (x,)).export(str(d / "m.tflite"))
    out["tflite"] = d / "m.tflite"
    for p in out.values():
        manifest = {
            "format": "edge-sr-manifest/1",
            "precision": "fp32",
            "arch": "ecbsr_m4c8",
            "args": ARGS,
            "scale": 2,
            "layout": "NCHW",
            "input_shape": {"mode": "fixed", "size": list(HW)},
        }
        p.with_name(p.name + ".json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(autouse=True, scope="module")
def _cache_home(tmp_path_factory: pytest.TempPathFactory):
    """The measured CPU peak is cached in a temporary home, once for the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.mark.parametrize("kind", ["onnx", "executorch", "tflite"])
def test_profile_local(artifacts: dict[str, Path], kind: str) -> None:
    r = profile(artifacts[kind], runs=6, warmup=1, threads=1)
    assert r.kind == kind and r.runs == 6
    assert r.input_shape == [1, 3, *HW]
    assert 0 < r.min_ms <= r.median_ms <= r.p90_ms
    assert r.size_bytes == artifacts[kind].stat().st_size
    assert r.peak_rss_mb and r.peak_rss_mb > 10
    assert r.ops, "per-operator breakdown missing"
    if kind == "executorch":
        assert all(o.delegated for o in r.ops)  # everything lowers to XNNPACK
        assert any("Convolution" in o.name for o in r.ops) and all(o.ms is not None for o in r.ops)
    if kind == "onnx":
        assert any(o.name.startswith("Conv") for o in r.ops) and not any(o.delegated for o in r.ops)
    if kind == "tflite":
        assert any(o.name == "CONV_2D" for o in r.ops) and all(o.ms is None for o in r.ops)
    # MACs from the manifest's architecture: 3 fused 3x3 convs + the 1x1 nearest-residual conv
    c, s2 = ARGS["channels"], 3 * ARGS["scale"] ** 2
    per_px = 9 * (3 * c + c * c + c * s2) + 3 * s2
    assert r.gmacs == pytest.approx(per_px * HW[0] * HW[1] / 1e9, rel=1e-6)
    assert r.precision == "fp32" and r.peak_precision == "fp32"
    assert r.theoretical_peak_gmacs_per_s and r.measured_peak_gmacs_per_s
    for pct in (r.percent_of_theoretical_peak, r.percent_of_measured_peak):
        assert pct is None or 0 < pct <= 100
    assert r.percent_of_theoretical_peak is not None and r.percent_of_theoretical_peak > 0


def test_profile_cli_json(artifacts: dict[str, Path], capfd: pytest.CaptureFixture[str]) -> None:
    rc = main(["profile", str(artifacts["onnx"]), "--runs", "3", "--warmup", "1", "--threads", "1", "--json"])
    assert rc == 0
    out = json.loads(capfd.readouterr().out)
    for key in (
        "min_ms",
        "median_ms",
        "p90_ms",
        "peak_rss_mb",
        "size_bytes",
        "ops",
        "gmacs",
        "theoretical_peak_gmacs_per_s",
        "measured_peak_gmacs_per_s",
        "percent_of_theoretical_peak",
        "percent_of_measured_peak",
    ):
        assert key in out
    assert {"name", "ms", "delegated"} <= set(out["ops"][0])


def test_profile_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", str(tmp_path / "missing.pte")]) == 2
    (tmp_path / "x.bin").write_bytes(b"\0")
    assert main(["profile", str(tmp_path / "x.bin")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unknown artifact type" in err[1]


def test_count_macs_by_hand() -> None:
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1, groups=2), nn.PixelShuffle(2)
    )
    # conv1: 8 out ch * 3*3*3 per px; conv2 grouped: 4 out ch * (8/2) per px
    assert count_macs(m, 10, 12) == 10 * 12 * (8 * 27 + 4 * 4)


def test_peak_is_measured_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(peak_mod, "machine_busy", lambda *a, **k: False)
    peak = measure_peak(1, n=256, k=2, tol=0.5)
    assert peak.gmacs_per_s > 0.1 and peak.stable and not peak.cached and peak.rounds >= 3
    cache = json.loads((tmp_path / "cache" / "edge-sr" / "peak.json").read_text())
    assert any("|threads=1|" in k for k in cache)

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("re-measured although cached")

    monkeypatch.setattr(torch, "mm", boom)
    again = measure_peak(1, n=256, k=2, tol=0.5)
    assert again.cached and again.gmacs_per_s == peak.gmacs_per_s


def test_peak_not_cached_when_busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(peak_mod, "machine_busy", lambda *a, **k: True)
    peak = measure_peak(1, n=128, k=2, tol=0.5)
    assert peak.busy and not peak.cached and peak.gmacs_per_s > 0
    assert not (tmp_path / "cache" / "edge-sr" / "peak.json").exists()


def test_peak_not_cached_when_unsettled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(peak_mod, "machine_busy", lambda *a, **k: False)
    peak = measure_peak(1, n=64, k=2, tol=0.0, max_rounds=3)  # an exact tie within 3 rounds never happens
    assert not peak.stable and peak.rounds == 3
    assert not (tmp_path / "cache" / "edge-sr" / "peak.json").exists()


def test_machine_busy_from_loadavg() -> None:
    assert peak_mod.machine_busy(1, loadavg="0.10 0.2 0.3 1/90 5", cpus=2) is False
    assert peak_mod.machine_busy(1, loadavg="1.90 1.0 1.0 3/90 5", cpus=2) is True
    assert peak_mod.machine_busy(2, loadavg="0.60 0.1 0.1 1/90 5", cpus=2) is True
    # after a measurement: 2 threads for 1 s of wall time should have used about 2 s of CPU time
    assert peak_mod.machine_busy(2, cpu_s=1.9, wall_s=1.0) is False
    assert peak_mod.machine_busy(2, cpu_s=1.1, wall_s=1.0) is True


CPUINFO_X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
cpu MHz\t\t: 2596.122
flags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512bw avx512_vnni avx_vnni

processor\t: 1
model name\t: AMD EPYC 9R14
cpu MHz\t\t: 3700.000
flags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512bw avx512_vnni avx_vnni
"""

CPUINFO_ARM = """processor\t: 0
BogoMIPS\t: 48.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp

processor\t: 1
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp
"""


def test_theoretical_peak_from_cpuinfo() -> None:
    info = parse_cpuinfo(CPUINFO_X86)
    assert info.name == "AMD EPYC 9R14" and info.arch == "x86" and info.logical_cpus == 2
    assert info.max_mhz == pytest.approx(3700.0)  # the highest cpu MHz line
    # AVX-512: 16 FP32 lanes x 2 FMA ports x 3.7 GHz per core
    fp32 = theoretical_peak(info, 1, "fp32")
    assert fp32.gmacs_per_s == pytest.approx(16 * 2 * 3.7) and "AVX-512" in fp32.note
    assert theoretical_peak(info, 2, "fp32").gmacs_per_s == pytest.approx(2 * 16 * 2 * 3.7)
    assert theoretical_peak(info, 8, "fp32").gmacs_per_s == pytest.approx(2 * 16 * 2 * 3.7)  # 2 CPUs only
    int8 = theoretical_peak(info, 1, "int8")
    assert int8.gmacs_per_s == pytest.approx(4 * fp32.gmacs_per_s) and "avx512_vnni" in int8.note
    # no FP16 arithmetic on this x86: FP16 programs compute in FP32
    assert theoretical_peak(info, 1, "fp16").gmacs_per_s == pytest.approx(fp32.gmacs_per_s)
    # the cpufreq maximum wins over the cpu MHz lines
    assert parse_cpuinfo(CPUINFO_X86, max_khz=2_000_000).max_mhz == pytest.approx(2000.0)

    avx2 = parse_cpuinfo(CPUINFO_X86.replace(" avx512f avx512bw avx512_vnni avx_vnni", ""))
    assert theoretical_peak(avx2, 1, "fp32").gmacs_per_s == pytest.approx(8 * 2 * 3.7)
    a8 = theoretical_peak(avx2, 1, "int8")  # int16 multiply-add: 2 MACs per 32-bit lane
    assert "no dot product" in a8.note and a8.gmacs_per_s == pytest.approx(2 * 8 * 2 * 3.7)

    arm = parse_cpuinfo(CPUINFO_ARM, max_khz=2_400_000, machine="aarch64")
    assert arm.arch == "arm" and arm.logical_cpus == 2
    a32 = theoretical_peak(arm, 1, "fp32")
    assert a32.gmacs_per_s == pytest.approx(4 * 4 * 2.4) and "NEON" in a32.note
    assert theoretical_peak(arm, 1, "fp16").gmacs_per_s == pytest.approx(2 * a32.gmacs_per_s)
    assert "asimddp" in theoretical_peak(arm, 1, "int8").note
    # no clock, no peak (and it says why)
    no_clock = theoretical_peak(parse_cpuinfo(CPUINFO_ARM, machine="aarch64"), 1, "fp32")
    assert no_clock.gmacs_per_s is None and "clock" in no_clock.note


def test_percent_above_100_is_refused() -> None:
    assert percent_of(50.0, 100.0, "theoretical fp32 peak") == pytest.approx(50.0)
    assert percent_of(100.0, 100.0, "x") == pytest.approx(100.0)
    assert percent_of(None, 100.0, "x") is None and percent_of(10.0, None, "x") is None
    with pytest.warns(PeakWarning, match="117 % of the measured fp32 peak"):
        assert percent_of(117.0, 100.0, "measured fp32 peak") is None


def test_profile_refuses_a_share_above_the_peak(
    artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny measured peak (what a loaded machine once cached) gives a share above 100 %: not printed."""
    import edge_sr.profile as profile_pkg

    slow = peak_mod.MeasuredPeak(1e-6, 4, True, False, False)
    monkeypatch.setattr(profile_pkg, "measure_peak", lambda threads: slow)
    with pytest.warns(PeakWarning):
        r = profile(artifacts["onnx"], runs=2, warmup=1, threads=1, ops=False)
    assert r.measured_peak_gmacs_per_s == 1e-6 and r.percent_of_measured_peak is None
    assert r.percent_of_theoretical_peak is not None and r.percent_of_theoretical_peak <= 100
    assert "above 100 %" in (r.peak_note or "")
    assert "n/a of the measured fp32 peak" in r.to_text()


def test_int8_program_meets_the_int8_peak(artifacts: dict[str, Path], tmp_path: Path) -> None:
    """The manifest's precision picks the peak: an INT8 program has no FP32 measured peak."""
    import shutil

    art = tmp_path / "m.onnx"
    shutil.copy(artifacts["onnx"], art)
    manifest = json.loads(artifacts["onnx"].with_name("m.onnx.json").read_text())
    art.with_name("m.onnx.json").write_text(json.dumps({**manifest, "precision": "int8"}))
    r = profile(art, runs=2, warmup=1, threads=1, ops=False)
    fp32 = theoretical_peak(peak_mod.cpu_info(), 1, "fp32").gmacs_per_s
    assert r.peak_precision == "int8" and r.measured_peak_gmacs_per_s is None
    assert r.percent_of_measured_peak is None
    if fp32 is not None:
        # 4 int8 MACs per 32-bit lane with a dot-product instruction, 2 without
        assert r.theoretical_peak_gmacs_per_s in (pytest.approx(4 * fp32), pytest.approx(2 * fp32))
        assert r.theoretical_peak_gmacs_per_s == theoretical_peak(peak_mod.cpu_info(), 1, "int8").gmacs_per_s


def test_latency_stats() -> None:
    mn, med, p90 = latency_stats([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    assert (mn, med) == (1.0, 5.5) and p90 == pytest.approx(9.1)


def test_tflite_delegation_walk() -> None:
    # t0 -> [0 TRANSPOSE on CPU] -> t1 -> DELEGATE{1 CONV_2D, 2 RELU} -> t3 -> [3 RESHAPE on CPU] -> t4
    ops = [
        {"index": 0, "op_name": "TRANSPOSE", "inputs": [0], "outputs": [1]},
        {"index": 1, "op_name": "CONV_2D", "inputs": [1, 5], "outputs": [2]},
        {"index": 2, "op_name": "RELU", "inputs": [2], "outputs": [3]},
        {"index": 3, "op_name": "RESHAPE", "inputs": [3], "outputs": [4]},
        {"index": 4, "op_name": "DELEGATE", "inputs": [1, 5], "outputs": [3]},
    ]
    got = {o.name: o.delegated for o in tflite_delegated(ops)}
    assert got == {"TRANSPOSE": False, "CONV_2D": True, "RELU": True, "RESHAPE": False}


# ---------------------------------------------------------------- parsing recorded outputs


def test_parse_benchmark_model_legacy() -> None:
    r = parse_benchmark_model((FIXTURES / "benchmark_model_legacy.txt").read_text())
    assert r["count"] == 60  # the regular runs, not the 29 warm-up runs
    assert r["min_ms"] == pytest.approx(16.208) and r["mean_ms"] == pytest.approx(16.8732)
    assert r["peak_mb"] == pytest.approx(19.4727)
    assert [(o.name.split()[0], o.delegated) for o in r["ops"]] == [
        ("TfLiteXNNPackDelegate", True),
        ("RESHAPE", False),
    ]
    assert r["ops"][0].ms == pytest.approx(15.944)


def test_parse_benchmark_model_litert() -> None:
    r = parse_benchmark_model((FIXTURES / "benchmark_model_litert.txt").read_text())
    assert r["count"] == 98 and r["min_ms"] == pytest.approx(9.874)
    ops = r["ops"]
    assert len(ops) == 8 and sum(o.delegated for o in ops) == 7  # Delegate/<op> rows; TRANSPOSE on the CPU
    assert ops[2].ms == pytest.approx(3.104) and "Convolution (NHWC, F32) IGEMM" in ops[2].name
    assert sum(o.ms for o in ops) == pytest.approx(10.063, abs=1e-3)


def test_parse_executor_runner() -> None:
    text = (FIXTURES / "executor_runner_iterations.txt").read_text()
    r = parse_executor_runner(text, warmup=3)
    assert len(r["times_ms"]) == 50 and max(r["times_ms"]) < 24  # warm-up (31.9, 22.4, 21.8 ms) dropped
    assert r["min_ms"] <= r["median_ms"] <= r["p90_ms"]
    old = parse_executor_runner((FIXTURES / "executor_runner_total.txt").read_text(), warmup=5)
    assert old["median_ms"] is None and old["mean_ms"] == pytest.approx(1235.79 / 55)
    with pytest.raises(RuntimeBackendError):
        parse_executor_runner("Segmentation fault\n", warmup=1)


def test_build_commands() -> None:
    setup, run, etdump = build_commands(
        "tflite", "a/m.tflite", "bin/benchmark_model", runs=20, warmup=3, threads=2
    )
    assert ["push", "a/m.tflite", "/data/local/tmp/edge-sr/m.tflite"] in setup
    assert run[0] == "shell" and "--graph=/data/local/tmp/edge-sr/m.tflite" in run[1]
    assert (
        "--num_runs=20" in run[1] and "--warmup_runs=3" in run[1] and "--enable_op_profiling=true" in run[1]
    )
    assert etdump is None
    _, run, etdump = build_commands("executorch", "m.pte", "executor_runner", runs=20, warmup=3, threads=4)
    assert "--num_executions=23" in run[1] and "--cpu_threads=4" in run[1] and etdump and etdump in run[1]


# ---------------------------------------------------------------- a fake adb on PATH


def _fake_adb(bin_dir: Path, log: Path, fixture: Path | None) -> None:
    """An `adb` that records its arguments; `shell <benchmark>` prints the recorded output; with no
    fixture every call fails as adb does without a device."""
    bin_dir.mkdir(exist_ok=True)
    if fixture is None:
        body = 'echo "adb: error: no devices/emulators found" >&2\nexit 1\n'
    else:
        body = f"""
args="$*"
case "$args" in
  *getprop*) echo "Pixel 7" ;;
  *pull*) exit 1 ;;
  *--graph=*|*--model_path=*) cat "{fixture}" ;;
esac
exit 0
"""
    script = bin_dir / "adb"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n{body}')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_profile_adb_tflite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "adb.log"
    _fake_adb(tmp_path / "bin", log, FIXTURES / "benchmark_model_litert.txt")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    art, tool = tmp_path / "m.tflite", tmp_path / "benchmark_model"
    art.write_bytes(b"x" * 1234)
    tool.write_bytes(b"\x7fELF")
    r = profile_adb(art, binary=tool, serial="emulator-5554", runs=50, warmup=5, threads=4)
    assert r.device == "Pixel 7 (adb)" and r.kind == "tflite" and r.size_bytes == 1234
    assert (
        r.min_ms == pytest.approx(9.874) and r.median_ms is None and r.peak_rss_mb == pytest.approx(13.0859)
    )
    assert len(r.ops) == 8
    calls = log.read_text().splitlines()
    assert all(c.startswith("-s emulator-5554 ") for c in calls)
    assert any("push" in c and "m.tflite" in c for c in calls) and any("chmod +x" in c for c in calls)


def test_profile_adb_executorch_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    _fake_adb(tmp_path / "bin", tmp_path / "adb.log", FIXTURES / "executor_runner_iterations.txt")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    art, tool = tmp_path / "m.pte", tmp_path / "executor_runner"
    art.write_bytes(b"x")
    tool.write_bytes(b"x")
    rc = main(
        [
            "profile",
            str(art),
            "--adb",
            "--benchmark-binary",
            str(tool),
            "--runs",
            "50",
            "--warmup",
            "3",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capfd.readouterr().out)
    assert 20 < out["median_ms"] < 24 and out["ops"] == [] and "ETDump" in out["ops_note"]


def test_profile_adb_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _fake_adb(tmp_path / "bin", tmp_path / "adb.log", None)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    art, tool = tmp_path / "m.tflite", tmp_path / "benchmark_model"
    art.write_bytes(b"x")
    tool.write_bytes(b"x")
    assert main(["profile", str(art), "--adb", "--benchmark-binary", str(tool)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no devices/emulators found" in err[0] and "adb shell mkdir" in err[0]
    # a missing binary is a usage error before anything runs
    assert main(["profile", str(art), "--adb"]) == 2
