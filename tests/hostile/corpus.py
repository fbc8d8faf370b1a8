"""The hostile-input corpus: checkpoints, configs, images, manifests and output paths an attacker or a careless
user would give, each with the verbs that read it and what every one of them must do.

A case writes its files into an empty folder (``Case.make``); ``argv`` gives the command line of one verb on
them. The shared, valid parts (a tiny x2 checkpoint, images, a PT2 artifact, a training folder) are built once
by :func:`build_base`. Nothing here is a binary blob: every file is made by code.

Expectations: ``refuse`` is exit 2, exactly one error line naming the file, no traceback, nothing written or
changed in the case folder, within the time bound; ``accept`` is exit 0 with only the expected output written.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shlex
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

ARCH, SCALE = "ecbsr_m4c8", 2  # the tiny model every case starts from
MARKER = "CODE_RAN"  # a malicious pickle would create this file in the case folder
VERBS = ("upscale", "eval", "convert", "quantize", "reparam", "profile", "verify", "train")
Kind = Literal["checkpoint", "config", "image", "manifest", "output"]


@dataclass(frozen=True)
class Base:
    """The valid inputs every case borrows (read-only)."""

    root: Path

    @property
    def ckpt(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def img(self) -> Path:
        return self.root / "img.png"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    @property
    def calib(self) -> Path:
        return self.root / "calib"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def artifact(self) -> Path:
        return self.root / "art" / "model.pt2"


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")  # the mode follows the array: L, I;16, RGB, RGBA
    return buf.getvalue()


def _rgb(seed: int, h: int, w: int) -> np.ndarray:
    # smooth gradients plus noise: an image a model and the metrics treat as a photo
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def build_base(root: Path) -> Base:
    """Write the shared valid inputs under ``root`` (about a second after the first import)."""
    import torch
    from edge_sr.convert import ExportSpec, export

    from edge_sr.models import create_model, save_checkpoint

    b = Base(Path(root))
    b.root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = create_model(ARCH, scale=SCALE)
    save_checkpoint(model, b.ckpt)
    b.img.write_bytes(_png(_rgb(0, 24, 24)))
    for folder, n, size in ((b.bench / "HR", 2, 32), (b.calib, 2, 32), (b.train, 4, 48)):
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / f"{i}.png").write_bytes(_png(_rgb(i + 1, size, size)))
    from edge_sr.models import load_checkpoint

    export(load_checkpoint(b.ckpt), "pt2", b.artifact, ExportSpec(input_size=(32, 32)), source=str(b.ckpt))
    return b


# ---------------------------------------------------------------------------------------------- checkpoints


def _state(base: Base) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(base.ckpt))


def _meta(base: Base) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(base.ckpt), framework="pt") as f:
        return dict(f.metadata() or {})


def _save(path: Path, state: dict[str, Any], meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    save_file(state, str(path), metadata=meta)


def _with_meta(**changes: str | None) -> Callable[[Path, Base], None]:
    """The base checkpoint with metadata fields replaced (None: removed)."""

    def make(d: Path, base: Base) -> None:
        meta = _meta(base)
        for k, v in changes.items():
            if v is None:
                meta.pop(k, None)
            else:
                meta[k] = v
        _save(d / "model.safetensors", _state(base), meta)

    return make


def _with_args(args: Any, scale: str | None = None) -> Callable[[Path, Base], None]:
    """The base checkpoint whose ``args`` is ``args`` (JSON-encoded unless a str) and ``scale`` replaced."""
    text = args if isinstance(args, str) else json.dumps(args)
    return _with_meta(args=text, **({"scale": scale} if scale is not None else {}))


def _with_tensors(change: Callable[[dict[str, Any]], None]) -> Callable[[Path, Base], None]:
    def make(d: Path, base: Base) -> None:
        state = _state(base)
        change(state)
        _save(d / "model.safetensors", state, _meta(base))

    return make


def _foreign_unknown(d: Path, base: Base) -> None:
    """No edge-sr card, and tensors no zoo family has: detection names the closest family."""
    state = {f"{k}_renamed": v for k, v in _state(base).items()}
    _save(d / "model.safetensors", state, {})


def _nan(state: dict[str, Any]) -> None:
    k = sorted(state)[0]
    state[k] = state[k].clone().fill_(float("nan"))


def _inf(state: dict[str, Any]) -> None:
    k = sorted(state)[-1]
    state[k] = state[k].clone()
    state[k].view(-1)[0] = float("inf")


def _ints(state: dict[str, Any]) -> None:
    for k in state:
        state[k] = (state[k] * 100).round().to(dtype=__import__("torch").int32)


def _bytes(fn: Callable[[bytes], bytes], name: str = "model.safetensors") -> Callable[[Path, Base], None]:
    def make(d: Path, base: Base) -> None:
        (d / name).write_bytes(fn(base.ckpt.read_bytes()))

    return make


def _raw_header(header: dict[str, Any], data: bytes = b"", claim: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if claim is None else claim) + text + data


class _RunsCode:
    """Pickles to a call of ``os.system``: loading it with the full unpickler runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _torch_pickle(d: Path, base: Base) -> None:
    import torch

    state = dict(_state(base))
    torch.save({"state_dict": state, "hook": _RunsCode(d / MARKER)}, str(d / "model.pth"))


def _plain_pickle(d: Path, base: Base) -> None:
    (d / "model.pth").write_bytes(pickle.dumps({"params": _RunsCode(d / MARKER)}))


# ------------------------------------------------------------------------------------------------- configs


def base_config(base: Base, d: Path) -> dict[str, Any]:
    """A valid one-step training recipe on the tiny model, writing into ``d/run``."""
    return {
        "model": {"name": ARCH, "scale": SCALE, "args": {}},
        "data": {"train_folders": [str(base.train)], "patch_size": 12, "batch_size": 2, "holdout": 0},
        "iters": 1,
        "val_every": 1000,
        "save_every": 1000,
        "log_every": 1,
        "out_dir": str(d / "run"),
        "threads": 1,
    }


def _cfg(change: Callable[[dict[str, Any], Path], None]) -> Callable[[Path, Base], None]:
    def make(d: Path, base: Base) -> None:
        import yaml

        cfg = base_config(base, d)
        change(cfg, d)
        (d / "cfg.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    return make


def _set(path: str, value: Any) -> Callable[[Path, Base], None]:
    def change(cfg: dict[str, Any], d: Path) -> None:
        node = cfg
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    return _cfg(change)


def _cfg_text(text: Callable[[Path, Base], str]) -> Callable[[Path, Base], None]:
    def make(d: Path, base: Base) -> None:
        (d / "cfg.yaml").write_text(text(d, base))

    return make


def _dump(cfg: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(cfg, sort_keys=False)


def _duplicate_keys(d: Path, base: Base) -> str:
    return _dump(base_config(base, d)) + "iters: 2\n"


def _alias_bomb(d: Path, base: Base) -> str:
    # nine levels of nine aliases: 9**9 (387 million) leaves once expanded, a few hundred bytes as text
    cfg = base_config(base, d)
    del cfg["model"]
    lines = [
        "model:",
        f"  name: {ARCH}",
        f"  scale: {SCALE}",
        "  args:",
        '    a: &a ["lol","lol","lol","lol"]',
    ]
    prev = "a"
    for name in "bcdefghi":
        lines.append(f"    {name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
        prev = name
    return "\n".join(lines) + "\n" + _dump(cfg)


def _oversized(d: Path, base: Base) -> str:
    # a valid recipe followed by 24 MB of comment: nothing a recipe needs, a parser busy for minutes
    return _dump(base_config(base, d)) + ("#" * 1023 + "\n") * (24 * 1024)


# -------------------------------------------------------------------------------------------------- images


def _img(data: Callable[[], bytes], name: str = "in.png") -> Callable[[Path, Base], None]:
    def make(d: Path, base: Base) -> None:
        (d / name).write_bytes(data())

    return make


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_bomb() -> bytes:
    # a 60000 x 60000 RGB header (10.8 GB decoded) with one compressed row of data
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 60000 * 3))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _bad_crc() -> bytes:
    data = bytearray(_png(_rgb(5, 24, 24)))
    i = data.index(b"IDAT") + 20
    data[i] ^= 0xFF
    return bytes(data)


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_rgb(6, 24, 24)).save(buf, format="JPEG")
    return buf.getvalue()


def _gray16() -> bytes:
    arr = (_rgb(7, 24, 24)[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    return _png(arr)


def _rgba() -> bytes:
    rgb = _rgb(8, 24, 24)
    return _png(np.concatenate([rgb, rgb[..., :1]], -1))


# ----------------------------------------------------------------------------------------------- manifests


def _artifact(change_manifest: Callable[[dict[str, Any]], Any] | None = None, *, text: str | None = None,
              change_bytes: Callable[[bytes], bytes] | None = None) -> Callable[[Path, Base], None]:  # fmt: skip
    """A copy of the base PT2 artifact in ``d/art`` with its manifest or its bytes changed."""

    def make(d: Path, base: Base) -> None:
        (d / "art").mkdir()
        blob = base.artifact.read_bytes()
        (d / "art" / "model.pt2").write_bytes(change_bytes(blob) if change_bytes else blob)
        m = json.loads((base.root / "art" / "model.pt2.json").read_text())
        if change_manifest is not None:
            m = change_manifest(m) or m
        out = text if text is not None else json.dumps(m, indent=2)
        (d / "art" / "model.pt2.json").write_text(out)

    return make


def _field(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        m[key] = value

    return change


def _flip_weight_byte(blob: bytes) -> bytes:
    # a byte inside the largest stored weight (the zip keeps them uncompressed): the program still loads and runs
    import io
    import struct
    import zipfile

    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        info = max(
            (i for i in z.infolist() if "/data/weights/weight_" in i.filename), key=lambda i: i.file_size
        )
    name_len, extra_len = struct.unpack("<HH", blob[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data = bytearray(blob)
    data[start + info.file_size // 2] ^= 0x01
    return bytes(data)


# ------------------------------------------------------------------------------------------------- outputs


def _out_dir_named_like_file(name: str) -> Callable[[Path, Base], None]:
    def make(d: Path, base: Base) -> None:
        (d / name).mkdir()
        (d / name / "keep.txt").write_text("an earlier result that must survive\n")
        (d / "model.safetensors").write_bytes(base.ckpt.read_bytes())

    return make


def _out_fifo(name: str) -> Callable[[Path, Base], None]:
    def make(d: Path, base: Base) -> None:
        os.mkfifo(d / name)
        (d / "model.safetensors").write_bytes(base.ckpt.read_bytes())

    return make


def _out_device(name: str) -> Callable[[Path, Base], None]:
    def make(d: Path, base: Base) -> None:
        import stat

        os.mknod(d / name, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
        (d / "model.safetensors").write_bytes(base.ckpt.read_bytes())

    return make


def _images_folder(d: Path, base: Base) -> None:
    (d / "imgs").mkdir()
    for i in range(2):
        (d / "imgs" / f"{i}.png").write_bytes(_png(_rgb(10 + i, 20, 20)))
    (d / "in.png").write_bytes(_png(_rgb(9, 20, 20)))
    (d / "model.safetensors").write_bytes(base.ckpt.read_bytes())


# ---------------------------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One hostile input.

    Attributes:
        id: ``kind/name``.
        kind: What it is.
        make: Writes the case's files into an empty folder.
        verbs: The verbs that read it.
        note: What it is, in words.
        expect: ``refuse`` (exit 2, one line, nothing written) or ``accept`` (exit 0, only the output written).
        names: The file the error line must name (default: the payload of the kind).
        argv: For output cases, the command line of each verb (overrides the kind's).
        extra: Arguments appended to every verb's command line.
        isolate: Run in a subprocess with a memory limit (for inputs that could exhaust memory).
        timeout: Seconds before the run counts as a hang.
        skip_if: A reason to skip where the machine cannot make the case (e.g. no mknod), or None.
    """

    id: str
    kind: Kind
    make: Callable[[Path, Base], None]
    verbs: tuple[str, ...]
    note: str
    expect: Literal["refuse", "accept"] = "refuse"
    names: str | None = None
    argv: dict[str, Callable[[Path, Base], list[str]]] = field(default_factory=dict)
    extra: tuple[str, ...] = ()
    isolate: bool = False
    timeout: float = 30.0
    skip_if: Callable[[], str | None] | None = None

    @property
    def foreign(self) -> bool:
        return self.kind == "checkpoint" and "pickle" in self.id


META_VERBS = ("upscale", "eval", "convert", "quantize", "reparam", "profile", "verify")  # read the model card
TENSOR_VERBS = (*META_VERBS, "train")  # `train --init` reads tensors only
IMAGE_VERBS = ("upscale", "eval")
ARTIFACT_VERBS = ("verify", "profile")


def _ck(id: str, make: Callable[[Path, Base], None], note: str, verbs: tuple[str, ...] = META_VERBS,
        **kw: Any) -> Case:  # fmt: skip
    return Case(f"checkpoint/{id}", "checkpoint", make, verbs, note, **kw)


def _cf(id: str, make: Callable[[Path, Base], None], note: str, **kw: Any) -> Case:
    return Case(f"config/{id}", "config", make, ("train",), note, **kw)


def _im(id: str, make: Callable[[Path, Base], None], note: str, **kw: Any) -> Case:
    return Case(f"image/{id}", "image", make, IMAGE_VERBS, note, **kw)


def _mf(id: str, make: Callable[[Path, Base], None], note: str, **kw: Any) -> Case:
    return Case(f"manifest/{id}", "manifest", make, ARTIFACT_VERBS, note, **kw)


def _no_mknod() -> str | None:
    import tempfile

    with tempfile.TemporaryDirectory() as t:
        try:
            _out_device("dev")(Path(t), Base(Path(t)))
        except (PermissionError, OSError):
            return "mknod is not permitted here"
        except Exception:
            pass  # the base checkpoint is not there: the node itself was made
    return None


def _upscale_to(out: str, src: str = "in.png") -> Callable[[Path, Base], list[str]]:
    return lambda d, b: ["upscale", str(d / src), "--checkpoint", str(d / "model.safetensors"), "-o",
                         str(d / out), "--no-progress", "--tile", "32", "--tile-overlap", "4"]  # fmt: skip


def _reparam_to(out: str) -> Callable[[Path, Base], list[str]]:
    return lambda d, b: ["reparam", str(d / "model.safetensors"), "-o", str(d / out)]


def _convert_to(out: str) -> Callable[[Path, Base], list[str]]:
    return lambda d, b: ["convert", str(d / "model.safetensors"), "--target", "pt2", "--input-size", "32x32",
                         "--no-verify", "-o", str(d / out)]  # fmt: skip


def _out(id: str, make: Callable[[Path, Base], None], note: str, argv: dict[str, Any], names: str,
         **kw: Any) -> Case:  # fmt: skip
    return Case(f"output/{id}", "output", make, tuple(argv), note, names=names, argv=argv, **kw)


def _truncate(blob: bytes) -> bytes:
    return blob[: len(blob) // 2]


def cases() -> list[Case]:
    """Every case of the corpus, in a stable order."""
    rand = np.random.default_rng(0).bytes(4096)
    ck = [
        _ck("args-not-json", _with_meta(args="{scale: 2,"), "args is not JSON"),
        _ck("args-list", _with_args([1, 2]), "args is a JSON list, not a mapping"),
        _ck("args-deep-nesting", _with_meta(args="[" * 100_000 + "]" * 100_000), "args nested 100000 deep"),
        _ck(
            "args-unknown-key", _with_args({"scale": 2, "bogus": 1}), "args has a key the model does not take"
        ),
        _ck("act-number", _with_args({"scale": 2, "act": 5}), "the activation given as a number"),
        _ck("channels-negative", _with_args({"scale": 2, "channels": -4}), "a negative channel count"),
        _ck(
            "channels-huge",
            _with_args({"scale": 2, "channels": 10**6}),
            "a million channels (terabytes)",
            isolate=True,
        ),  # fmt: skip
        _ck("scale-abc", _with_args({"scale": 2}, scale="abc"), "scale is 'abc'"),
        _ck("scale-zero", _with_args({"scale": 0}, scale="0"), "scale 0"),
        _ck("scale-seven", _with_args({"scale": 7}, scale="7"), "scale 7 (weights are x2)"),
        _ck("scale-disagrees", _with_args({"scale": 2}, scale="3"), "metadata scale 3, args and weights x2"),
        _ck("form-eval", _with_meta(form="eval"), "form is neither train nor deploy"),
        _ck("arch-unknown", _with_meta(arch="nope"), "an architecture the zoo does not have"),
        _ck("no-arch-unknown", _foreign_unknown, "no card, and weights no zoo family fits"),
        _ck("int-weights", _with_tensors(_ints), "integer weights", verbs=TENSOR_VERBS),
        _ck("nan-weights", _with_tensors(_nan), "NaN weights", verbs=TENSOR_VERBS),
        _ck("inf-weights", _with_tensors(_inf), "an infinite weight", verbs=TENSOR_VERBS),
        # (`train --init` copies the tensors whose names and shapes match by design: not a refusal there)
        _ck("missing-tensor", _with_tensors(lambda s: s.pop(sorted(s)[0])), "a weight missing"),
        _ck("truncated", _bytes(_truncate), "the file cut in half", verbs=TENSOR_VERBS),
        _ck("zero-bytes", _bytes(lambda b: b""), "an empty file", verbs=TENSOR_VERBS),
        _ck("random-bytes", _bytes(lambda b: rand), "4 KB of random bytes", verbs=TENSOR_VERBS),
        _ck(
            "header-claims-8eb",
            _bytes(lambda b: _raw_header({}, b"", claim=2**63 - 1)),
            "a header length of 2**63-1",
            verbs=TENSOR_VERBS,
        ),  # fmt: skip
        _ck(
            "header-claims-100mb",
            _bytes(lambda b: _raw_header({"__metadata__": {}}, b"x" * 64, 100 << 20)),
            "a 100 MB header claim in a 100-byte file",
            verbs=TENSOR_VERBS,
        ),  # fmt: skip
        _ck(
            "header-offsets-past-end",
            _bytes(
                lambda b: _raw_header(
                    {
                        "__metadata__": {"arch": ARCH, "args": "{}", "scale": "2"},
                        "w": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 1 << 42]},
                    },
                    b"\0" * 16,
                )
            ),
            "a tensor whose offsets run 4 TB past the end",
            verbs=TENSOR_VERBS,
        ),  # fmt: skip
        _ck(
            "metadata-not-strings",
            _bytes(lambda b: _raw_header({"__metadata__": {"arch": 5, "scale": [2]}})),
            "metadata values that are not strings",
            verbs=TENSOR_VERBS,
        ),  # fmt: skip
        _ck(
            "pickle-runs-code",
            _torch_pickle,
            "a torch.save zip whose pickle calls os.system",
            verbs=TENSOR_VERBS,
            names="model.pth",
        ),  # fmt: skip
        _ck(
            "plain-pickle-runs-code",
            _plain_pickle,
            "a bare pickle that calls os.system",
            verbs=TENSOR_VERBS,
            names="model.pth",
        ),  # fmt: skip
    ]
    cf = [
        _cf("lr-negative", _set("optim.lr", -1e-3), "a negative learning rate"),
        _cf("lr-nan", _set("optim.lr", float("nan")), "a NaN learning rate"),
        _cf("lr-inf", _set("optim.lr", float("inf")), "an infinite learning rate"),
        _cf(
            "lr-nan-override", _cfg(lambda c, d: None), "--set optim.lr=nan", extra=("--set", "optim.lr=nan")
        ),
        _cf("batch-zero", _set("data.batch_size", 0), "batch size 0"),
        _cf("patch-zero", _set("data.patch_size", 0), "a patch of 0 pixels"),
        _cf("patch-negative", _set("data.patch_size", -8), "a negative patch size"),
        _cf("save-every-zero", _set("save_every", 0), "save_every 0"),
        _cf("log-every-zero", _set("log_every", 0), "log_every 0"),
        _cf("val-every-zero", _set("val_every", 0), "val_every 0"),
        _cf("scale-zero", _set("model.scale", 0), "model scale 0"),
        _cf("scale-seven", _set("model.scale", 7), "model scale 7"),
        _cf("threads-negative", _set("threads", -2), "negative threads"),
        _cf("workers-negative", _set("data.workers", -1), "negative data workers"),
        _cf("holdout-negative", _set("data.holdout", -3), "a negative holdout"),
        _cf("iters-negative", _set("iters", -5), "negative iterations"),
        _cf("warmup-negative", _set("optim.warmup_iters", -10), "negative warm-up"),
        _cf("betas-out-of-range", _set("optim.betas", [1.5, 0.999]), "Adam beta 1.5"),
        _cf("ema-decay-five", _set("ema_decay", 5.0), "EMA decay 5"),
        _cf("grad-clip-negative", _set("optim.grad_clip", -1.0), "a negative gradient clip"),
        _cf("channels-negative", _set("model.args", {"channels": -3}), "model.args channels -3"),
        _cf("args-unknown", _set("model.args", {"bogus": 1}), "model.args with an unknown key"),
        _cf(
            "out-dir-parent-file", _cfg(_out_dir_under_file), "out_dir under a regular file", names="cfg.yaml"
        ),
        _cf("duplicate-keys", _cfg_text(_duplicate_keys), "iters given twice"),
        _cf(
            "alias-bomb-in-args", _cfg_text(_alias_bomb), "a YAML alias bomb inside model.args", isolate=True
        ),
        _cf("oversized", _cfg_text(_oversized), "a 24 MB recipe"),
        _cf("not-a-mapping", _cfg_text(lambda d, b: "- 1\n- 2\n"), "a list, not a mapping"),
        _cf("not-yaml", _cfg_text(lambda d, b: "model: {name: [\n"), "broken YAML"),
    ]
    im = [
        _im("truncated", _img(lambda: _png(_rgb(3, 24, 24))[:300]), "a PNG cut short"),
        _im("zero-bytes", _img(lambda: b""), "an empty .png"),
        _im("text-named-png", _img(lambda: b"not an image at all\n"), "a text file named .png"),
        _im("decompression-bomb", _img(_png_bomb), "a 60000x60000 header with one row of data"),
        _im("bad-crc", _img(_bad_crc), "a PNG with a corrupted data chunk"),
        _im("gray16", _img(_gray16), "16-bit grayscale (valid)", expect="accept"),
        _im(
            "gray8", _img(lambda: _png(_rgb(4, 24, 24)[..., 0])), "8-bit grayscale (valid)", expect="accept"
        ),  # fmt: skip
        _im("rgba", _img(_rgba), "RGBA (valid)", expect="accept"),
        _im("jpeg-named-png", _img(_jpeg), "a JPEG named .png (valid)", expect="accept"),
    ]
    mf = [
        _mf("not-json", _artifact(text="{oops"), "the manifest is not JSON"),
        _mf("a-list", _artifact(text="[]"), "the manifest is a list"),
        _mf("empty", _artifact(text=""), "an empty manifest"),
        _mf("no-format", _artifact(lambda m: m.pop("format")), "no format field"),
        _mf("scale-abc", _artifact(_field("scale", "abc")), "scale 'abc'"),
        _mf("scale-zero", _artifact(_field("scale", 0)), "scale 0"),
        _mf("arch-number", _artifact(_field("arch", 5)), "arch is a number"),
        _mf("args-list", _artifact(_field("args", [1])), "args is a list"),
        _mf("input-shape-list", _artifact(_field("input_shape", [1, 2])), "input_shape is a list"),
        _mf(
            "input-size-negative",
            _artifact(_field("input_shape", {"mode": "fixed", "size": [-32, 32]})),
            "a negative input size",
        ),  # fmt: skip
        _mf("precision-unknown", _artifact(_field("precision", "int3")), "precision int3"),
        _mf("layout-unknown", _artifact(_field("layout", "NHCW")), "layout NHCW"),
        _mf("inputs-not-list", _artifact(_field("inputs", "x")), "inputs is a string"),
        _mf("sha256-not-string", _artifact(_field("artifact_sha256", 12)), "artifact_sha256 is a number"),
        _mf(
            "flipped-byte",
            _artifact(change_bytes=_flip_weight_byte),
            "one weight byte flipped after export",
            names="model.pt2",
        ),  # fmt: skip
        _mf(
            "artifact-truncated",
            _artifact(change_bytes=_truncate),
            "the artifact cut in half",
            names="model.pt2",
        ),  # fmt: skip
    ]
    out = [
        _out(
            "upscale-onto-folder",
            _out_dir_named_like_file("out.png"),
            "-o out.png where out.png/ is a folder with a file in it",
            {"upscale": _upscale_to("out.png", src="imgs/0.png")},
            "out.png",
        ),  # fmt: skip
        _out(
            "reparam-onto-folder",
            _out_dir_named_like_file("deploy.safetensors"),
            "-o deploy.safetensors where that is a folder",
            {"reparam": _reparam_to("deploy.safetensors")},
            "deploy.safetensors",
        ),  # fmt: skip
        _out(
            "upscale-onto-fifo",
            _fifo_and_image("out.png"),
            "-o a FIFO",
            {"upscale": _upscale_to("out.png")},
            "out.png",
        ),  # fmt: skip
        _out(
            "reparam-onto-fifo",
            _out_fifo("deploy.safetensors"),
            "-o a FIFO",
            {"reparam": _reparam_to("deploy.safetensors")},
            "deploy.safetensors",
        ),  # fmt: skip
        _out(
            "convert-onto-fifo",
            _out_fifo("model.pt2"),
            "-o a FIFO",
            {"convert": _convert_to("model.pt2")},
            "model.pt2",
        ),  # fmt: skip
        _out(
            "upscale-onto-device",
            _device_and_image("out.png"),
            "-o a character device",
            {"upscale": _upscale_to("out.png")},
            "out.png",
            skip_if=_no_mknod,
        ),  # fmt: skip
        _out(
            "reparam-onto-device",
            _out_device("deploy.safetensors"),
            "-o a character device",
            {"reparam": _reparam_to("deploy.safetensors")},
            "deploy.safetensors",
            skip_if=_no_mknod,
        ),  # fmt: skip
        _out(
            "upscale-onto-input",
            _images_folder,
            "upscale in.png -o in.png",
            {"upscale": _upscale_to("in.png")},
            "in.png",
        ),  # fmt: skip
        _out(
            "upscale-folder-onto-itself",
            _images_folder,
            "upscale imgs/ -o imgs/",
            {"upscale": _upscale_to("imgs", src="imgs")},
            "imgs",
        ),  # fmt: skip
        _out(
            "reparam-onto-input",
            _images_folder,
            "reparam model.safetensors -o model.safetensors",
            {"reparam": _reparam_to("model.safetensors")},
            "model.safetensors",
        ),  # fmt: skip
    ]
    return ck + cf + im + mf + out


def _out_dir_under_file(cfg: dict[str, Any], d: Path) -> None:
    (d / "afile").write_text("a regular file\n")
    cfg["out_dir"] = str(d / "afile" / "run")


def _fifo_and_image(name: str) -> Callable[[Path, Base], None]:
    def make(d: Path, base: Base) -> None:
        _out_fifo(name)(d, base)
        (d / "in.png").write_bytes(base.img.read_bytes())

    return make


def _device_and_image(name: str) -> Callable[[Path, Base], None]:
    def make(d: Path, base: Base) -> None:
        _out_device(name)(d, base)
        (d / "in.png").write_bytes(base.img.read_bytes())

    return make


# ------------------------------------------------------------------------------------ command lines per kind


def payload(case: Case) -> str:
    """The file the error line must name."""
    if case.names:
        return case.names
    return {
        "checkpoint": "model.safetensors",
        "config": "cfg.yaml",
        "image": "in.png",
        "manifest": "model.pt2.json",
    }[case.kind]


def argv(case: Case, verb: str, d: Path, base: Base) -> list[str]:
    """The command line of ``verb`` on ``case``'s files in ``d`` (may add files a verb needs beside them)."""
    if case.argv:
        return [*case.argv[verb](d, base), *case.extra]
    if case.kind == "checkpoint":
        cmd = _checkpoint_argv(verb, d / payload(case), d, base, case.foreign)
    elif case.kind == "config":
        cmd = ["train", str(d / "cfg.yaml"), "--no-progress"]
    elif case.kind == "image":
        if verb == "upscale":
            cmd = _upscale_to("out.png")(d, base)
            cmd[cmd.index("--checkpoint") + 1] = str(base.ckpt)
        else:  # eval: the image is the one HR image of a benchmark folder
            (d / "bench" / "HR").mkdir(parents=True)
            os.link(d / "in.png", d / "bench" / "HR" / "in.png")
            cmd = ["eval", "--data", str(d / "bench"), "--scale", str(SCALE), "--checkpoint", str(base.ckpt)]
    else:  # manifest
        art = str(d / "art" / "model.pt2")
        if verb == "verify":
            cmd = ["verify", art, "--reference", str(base.ckpt), "--limit", "1"]
        else:
            cmd = ["profile", art, "--runs", "1", "--warmup", "0", "--no-ops", "--no-peak"]
    return [*cmd, *case.extra]


def _checkpoint_argv(verb: str, ck: Path, d: Path, base: Base, foreign: bool) -> list[str]:
    model = ["--model", ARCH, "--scale", str(SCALE)] if foreign else []
    c = str(ck)
    if verb == "upscale":
        return ["upscale", str(base.img), "--checkpoint", c, *model, "-o", str(d / "out.png"), "--no-progress",
                "--tile", "32", "--tile-overlap", "4"]  # fmt: skip
    if verb == "eval":
        return ["eval", "--data", str(base.bench), "--scale", str(SCALE), "--checkpoint", c]
    if verb == "convert":
        return ["convert", c, "--target", "pt2", "--input-size", "32x32", "-o", str(d / "out.pt2")]
    if verb == "quantize":
        return ["quantize", c, "--target", "onnx", "--calib", str(base.calib), "--calib-count", "2",
                "--calib-lr", "--input-size", "32x32", "--no-verify", "-o", str(d / "q.onnx")]  # fmt: skip
    if verb == "reparam":
        return ["reparam", c, *model, "-o", str(d / "deploy.safetensors")]
    if verb == "profile":
        return [
            "profile",
            c,
            "--runs",
            "1",
            "--warmup",
            "0",
            "--no-ops",
            "--no-peak",
            "--input-size",
            "16x16",
        ]
    if (
        verb == "verify"
    ):  # the checkpoint as the reference of a valid artifact (copied: verify records into it)
        (d / "art").mkdir(exist_ok=True)
        for f in ("model.pt2", "model.pt2.json"):
            (d / "art" / f).write_bytes((base.root / "art" / f).read_bytes())
        return ["verify", str(d / "art" / "model.pt2"), "--reference", c, "--limit", "1"]
    if verb == "train":
        import yaml

        (d / "cfg.yaml").write_text(yaml.safe_dump(base_config(base, d), sort_keys=False))
        return ["train", str(d / "cfg.yaml"), "--init", c, "--no-progress"]
    raise ValueError(verb)


def runs() -> list[tuple[Case, str]]:
    """Every (case, verb) pair the corpus asks for."""
    return [(c, v) for c in cases() for v in c.verbs]
