"""The manifest: ``<artifact>.json`` beside every artifact (``model.onnx`` -> ``model.onnx.json``).

It says everything a runner or an app needs to feed the artifact and trust it: architecture and args, scale,
colour channels and the colour conversion around the model (``color``, see :func:`color_entry`), form,
precision and quantization (with int8 I/O scale / zero point), accepted input sizes, layout, value range,
I/O dtypes, checksums of the source checkpoint and of the artifact, library versions, and the verification
verdict once verified. The same fields go inside the artifact where the format has room for them.

A video model's step (``edge_sr.models.stream``) has a ``stream`` entry: its ``StreamSpec`` for the export's
LR frame size, and how each tensor appears in the artifact::

    "stream": {
      "frames": ["cur"], "output": "sr", "state_outputs": ["hidden_out"],
      "state": [                                   # in call order, after the frames
        {"name": "prev", "next": "cur", "shape": [1, 3, 180, 320], "resolution": "lr", "init": "frame"},
        {"name": "hidden", "next": "hidden_out", "shape": [1, 16, 180, 320], "resolution": "lr", "init": "zeros"},
        {"name": "prev_sr", "next": "sr", "shape": [1, 3, 720, 1280], "resolution": "hr", "init": "zeros"}],
      "size": [180, 320],                          # the LR frame (H, W) the shapes are for (*)
      "frame": {"value_range": [0.0, 1.0], "colors": 3},   # what a frame holds (``color`` says which channels)
      "tensors": [                                 # every input, then every output, as the artifact has them
        {"name": "cur", "io": "input", "index": 0, "dtype": "float32", "layout": "NHWC",
         "shape": [1, 180, 320, 3], "quant": null}, ...]}

``state[].shape`` is NCHW (the model's contract); ``tensors[].shape`` is in the artifact's ``layout`` (NHWC
permutes every 4-D tensor). (*) A dynamic step (``input_shape`` mode ``dynamic``) takes any frame size of its
range: ``size`` and ``state[].shape`` are then those of the traced example (the state's H / W follow the
frame's, times the scale for an ``hr`` state) and ``tensors[].shape`` is null. ``next`` names the output (or frame input) whose value the state takes at the
next frame, fed back unchanged; ``init`` is ``zeros`` or ``frame`` (a copy of the first frame). ``index`` is
the tensor's position among the artifact's inputs / outputs: ExecuTorch methods and PT2 programs take and
give tensors in that order, the other formats by ``name``. ``quant`` is ``{"dtype", "scale", "zero_point"}``
for an int8 tensor (``edge_sr.quantize`` gives a state and the output feeding it the same scale and zero
point, so an app feeds the output back as it is), else null.

A whole-clip or window video model (BasicVSR, IconVSR, BasicVSR++, EDVR: ``edge_sr.convert.clip``) exports a
fixed window of T frames at one LR size (``input_shape`` fixed) and has a ``clip`` entry::

    "clip": {"kind": "clip",          # clip: every frame out; window: the centre frame T // 2 out
             "frames": 15,            # T, fixed
             "overlap": 5,            # frames of context a runner keeps on each side of an inner cut
                                      # (a window: T - 1, it slides one frame per output)
             "input": "frames", "output": "sr",
             "layout": "NTCHW",       # (1, T, 3, h, w) in; NTHWC: (1, T, h, w, 3) (the manifest's NHWC)
             "min_side": 32, "multiple": 1}   # what the alignment needs of a frame side
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
from importlib import metadata as _md
from pathlib import Path
from typing import Any

from edge_sr.errors import InputError, RuntimeBackendError
from edge_sr.io_utils import atomic_path

FORMAT = "edge-sr-manifest/1"
IO_DTYPES = ("float32", "float16", "int8", "uint8", "image")  # an I/O entry's dtype
SHAPE_MODES = ("fixed", "dynamic", "enumerated", "any")
MAX_SCALE = 8
MAX_SIDE = 1 << 16  # an input side the manifest may name, in pixels
COLORS = (1, 3)
# the one colour conversion a 1-colour (Y-channel) artifact is fed through; a runner applies it
Y_CONVERSION = "BT.601 rgb2ycbcr (MATLAB)"
Y_CHROMA = "MATLAB bicubic"
_COLOR_ENTRIES: dict[int, dict[str, Any]] = {
    3: {"colors": 3, "model_input": "RGB", "conversion": None, "chroma": None},
    1: {"colors": 1, "model_input": "Y", "conversion": Y_CONVERSION, "chroma": Y_CHROMA},
}
_LIBS = (
    "edge-sr",
    "torch",
    "executorch",
    "coremltools",
    "onnx",
    "onnxruntime",
    "litert-torch",
    "ai-edge-litert",
)


def manifest_path(artifact: str | os.PathLike[str]) -> Path:
    """Where the manifest of ``artifact`` lives: the artifact path plus ``.json``."""
    p = Path(artifact)
    return p.with_name(p.name + ".json")


def sha256_path(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, or of a folder (``.mlpackage``) over its files' relative paths and bytes, sorted."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if p.is_dir():
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk: a folder artifact (``.mlpackage``) summed, an ONNX file with its external data."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    size = p.stat().st_size
    if p.suffix == ".onnx":
        import onnx

        locations = {
            e.value
            for t in onnx.load(os.fspath(p), load_external_data=False).graph.initializer
            for e in t.external_data
            if e.key == "location"
        }
        size += sum((p.parent / loc).stat().st_size for loc in locations if (p.parent / loc).is_file())
    return size


def library_versions() -> dict[str, str]:
    out = {}
    for lib in _LIBS:
        try:
            out[lib] = _md.version(lib)
        except _md.PackageNotFoundError:
            continue
    return out


def io_quant(scale: float, zero_point: int, dtype: str = "int8") -> dict[str, Any]:
    """The manifest entry for quantized I/O: ``real = scale * (q - zero_point)``."""
    return {"dtype": dtype, "scale": float(scale), "zero_point": int(zero_point)}


def color_entry(colors: int) -> dict[str, Any]:
    """The manifest's ``color``: what the artifact's channels hold and how an RGB image becomes them.

    ``colors`` 3: ``{"colors": 3, "model_input": "RGB", "conversion": null, "chroma": null}``, the image as it
    is. ``colors`` 1: ``{"colors": 1, "model_input": "Y", "conversion": "BT.601 rgb2ycbcr (MATLAB)",
    "chroma": "MATLAB bicubic"}``: the artifact takes the Y of ``rgb2ycbcr`` in [0, 1] units
    (``16/255 + (65.481 R + 128.553 G + 24.966 B) / 255``, so [16, 235] / 255), Cb / Cr are upscaled with
    MATLAB's bicubic ``imresize`` and ``ycbcr2rgb`` gives RGB back; a gray image goes in as it is.
    """
    if colors not in _COLOR_ENTRIES:
        raise ValueError(f"colors must be 1 or 3, got {colors!r}")
    return dict(_COLOR_ENTRIES[colors])


def build_manifest(
    *,
    target: str,
    artifact: str,
    arch: str | None,
    args: dict[str, Any],
    scale: int,
    form: str,
    reparameterized: bool,
    precision: str,
    input_shape: dict[str, Any],
    layout: str,
    io: str,
    pixel_shuffle: str,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    quantization: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    target_info: dict[str, Any] | None = None,
    colors: int = 3,
) -> dict[str, Any]:
    """The manifest content known before the artifact exists (checksum and size are added after writing).

    ``inputs`` / ``outputs`` entries: ``{"name", "dtype", "layout", "value_range", "quant": io_quant(...)|None}``;
    ``colors``: the model's colour channels (``color`` entry: :func:`color_entry`).
    """
    return {
        "format": FORMAT,
        "target": target,
        "artifact": artifact,
        "arch": arch,
        "args": args,
        "scale": int(scale),
        "color": color_entry(colors),
        "form": form,
        "reparameterized": reparameterized,
        "precision": precision,
        "quantization": quantization,
        "input_shape": input_shape,
        "layout": layout,
        "io": io,
        "pixel_shuffle": pixel_shuffle,
        "inputs": inputs,
        "outputs": outputs,
        "source": source,
        "target_info": target_info or {},
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "verification": None,
    }


def stream_entry(base: dict[str, Any], manifest: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """The manifest's ``stream`` entry (see the module docstring) from ``StreamSpec.manifest_entry`` and the
    artifact's ``inputs`` / ``outputs`` entries, for LR frames of ``size``."""
    tensors = [
        {
            "name": e["name"],
            "io": io[:-1],
            "index": i,
            "dtype": e["dtype"],
            "layout": e.get("layout", manifest.get("layout", "NCHW")),
            "shape": e.get("shape"),
            "quant": e.get("quant"),
        }
        for io in ("inputs", "outputs")
        for i, e in enumerate(manifest[io])
    ]
    colors = (manifest.get("color") or {}).get("colors", 3)
    frame = {"value_range": [0.0, 1.0], "colors": colors}
    return {**base, "size": [int(size[0]), int(size[1])], "frame": frame, "tensors": tensors}


def embedded_metadata(manifest: dict[str, Any]) -> dict[str, str]:
    """String key/values to store inside the artifact (format metadata fields take strings)."""
    keep = ("arch", "scale", "form", "precision", "layout", "io", "pixel_shuffle")
    meta = {f"edge_sr.{k}": str(manifest[k]) for k in keep}
    meta["edge_sr.args"] = json.dumps(manifest["args"], sort_keys=True)
    meta["edge_sr.input_shape"] = json.dumps(manifest["input_shape"], sort_keys=True)
    meta["edge_sr.quantization"] = json.dumps(manifest["quantization"], sort_keys=True)
    if manifest.get("color") is not None:
        meta["edge_sr.color"] = json.dumps(manifest["color"], sort_keys=True)
    if manifest.get("stream") is not None:
        meta["edge_sr.stream"] = json.dumps(manifest["stream"], sort_keys=True)
    meta["edge_sr.format"] = FORMAT
    return meta


def write_manifest(path: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` as JSON to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(artifact: str | os.PathLike[str], *, required: bool = True) -> dict[str, Any] | None:
    """The manifest beside ``artifact``, its fields checked (:func:`check_manifest`); None when absent and
    not ``required``."""
    mp = manifest_path(artifact)
    if not mp.is_file():
        if required:
            raise InputError(mp, "no manifest beside the artifact; export it with `edge-sr convert`")
        return None
    try:
        data = json.loads(mp.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e) or type(e).__name__
        raise InputError(mp, f"unreadable manifest ({msg})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(mp, f"not an edge-sr manifest (expected format {FORMAT})")
    check_manifest(data, mp, artifact=artifact)
    return data


def check_manifest(
    data: dict[str, Any], path: str | os.PathLike[str], *, artifact: str | os.PathLike[str] | None = None
) -> None:
    """Check the types and ranges of the fields a runner uses; absent fields take the runner's defaults.

    ``target`` a registered target (the one the artifact's suffix names), ``scale`` an integer 1-8,
    ``precision`` one of ``PRECISIONS``, ``layout`` one of ``LAYOUTS``, ``io`` one of ``IOS``,
    ``input_shape`` a fixed ``size`` / ``dynamic`` ``min``-``max`` / ``enumerated`` ``sizes`` of positive
    ints, ``inputs`` / ``outputs`` lists of mappings whose ``dtype`` is one of ``IO_DTYPES`` and whose
    ``quant`` is null or ``{scale > 0, zero_point int}``, ``artifact_sha256`` 64 hex digits, ``color`` one of
    the two entries :func:`color_entry` writes (and ``args.colors``, when given, the same count), ``stream``
    (when present) as the module docstring describes it, consistent with itself and with ``inputs`` /
    ``outputs``.

    Raises:
        InputError: One line naming the manifest, the field, its value and what is allowed.
    """
    from edge_sr.convert import TARGETS, target_for_path
    from edge_sr.convert.spec import IOS, LAYOUTS, PRECISIONS

    def bad(field: str, value: Any, want: str) -> InputError:
        return InputError(path, f"manifest {field!r} is {_show(value)}; expected {want}")

    if "target" in data:
        want = target_for_path(artifact) if artifact is not None else None
        if (
            not isinstance(data["target"], str)
            or data["target"] not in TARGETS
            or (want is not None and data["target"] != want)
        ):
            raise bad("target", data["target"], want or f"one of {', '.join(TARGETS)}")
    if "scale" in data and not (_is_int(data["scale"]) and 1 <= data["scale"] <= MAX_SCALE):
        raise bad("scale", data["scale"], f"an integer 1-{MAX_SCALE}")
    for field, allowed in (("precision", PRECISIONS), ("layout", LAYOUTS), ("io", IOS)):
        if field in data and data[field] not in allowed:
            raise bad(field, data[field], "one of " + ", ".join(allowed))
    if "input_shape" in data:
        _check_input_shape(data["input_shape"], bad)
    for field in ("inputs", "outputs"):
        if field in data:
            _check_io(field, data[field], bad)
    sha = data.get("artifact_sha256")
    if "artifact_sha256" in data and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise bad("artifact_sha256", sha, "64 lowercase hex digits")
    if "args" in data and data["args"] is not None and not isinstance(data["args"], dict):
        raise bad("args", data["args"], "a JSON object")
    if "arch" in data and data["arch"] is not None and not isinstance(data["arch"], str):
        raise bad("arch", data["arch"], "a model name")
    _check_color(data, bad)
    if "stream" in data:
        _check_stream(data, bad)
    if "clip" in data:
        _check_clip(data, bad)


_RESOLUTIONS = ("lr", "hr")
_INITS = ("zeros", "frame")


def _check_stream(data: dict[str, Any], bad: Any) -> None:
    """The ``stream`` entry: names, state (next / shape / resolution / init), size, frame, tensors."""
    from edge_sr.convert.spec import LAYOUTS

    st = data["stream"]
    if not isinstance(st, dict):
        raise bad("stream", st, "an object {frames, output, state_outputs, state, size, frame, tensors}")
    frames, out, souts, state = st.get("frames"), st.get("output"), st.get("state_outputs"), st.get("state")
    if not (isinstance(frames, list) and frames and all(isinstance(f, str) for f in frames)):
        raise bad("stream.frames", frames, "a non-empty list of input names")
    if not isinstance(out, str):
        raise bad("stream.output", out, "the SR output's name")
    if not (isinstance(souts, list) and all(isinstance(n, str) for n in souts)):
        raise bad("stream.state_outputs", souts, "a list of output names")
    if not (isinstance(state, list) and all(isinstance(s, dict) for s in state)):
        raise bad("stream.state", state, "a list of {name, next, shape, resolution, init}")
    feeders = {*frames, out, *souts}
    for i, s in enumerate(state):
        where = f"stream.state[{i}]"
        if not isinstance(s.get("name"), str):
            raise bad(f"{where}.name", s.get("name"), "an input name")
        if not isinstance(s.get("next"), str) or s["next"] not in feeders:
            raise bad(f"{where}.next", s.get("next"), "a frame or output name: " + ", ".join(sorted(feeders)))
        shape = s.get("shape")
        if not (isinstance(shape, list) and len(shape) == 4 and all(_is_side(d) for d in shape)):
            raise bad(f"{where}.shape", shape, f"[N, C, H, W], each an integer 1-{MAX_SIDE}")
        if s.get("resolution") not in _RESOLUTIONS:
            raise bad(f"{where}.resolution", s.get("resolution"), "lr or hr")
        if s.get("init") not in _INITS:
            raise bad(f"{where}.init", s.get("init"), "zeros or frame")
    inputs = [*frames, *(s["name"] for s in state)]
    outputs = [out, *souts]
    if len(set(inputs)) != len(inputs) or len(set(outputs)) != len(outputs):
        raise bad("stream", {"inputs": inputs, "outputs": outputs}, "distinct names")
    if not _is_hw(st.get("size")):
        raise bad("stream.size", st.get("size"), f"[height, width], each an integer 1-{MAX_SIDE}")
    frame = st.get("frame")
    vr = frame.get("value_range") if isinstance(frame, dict) else None
    ok = isinstance(vr, list) and len(vr) == 2 and all(_is_num(v) for v in vr) and vr[0] < vr[1]
    if not (ok and isinstance(frame, dict) and frame.get("colors") in COLORS):
        raise bad("stream.frame", frame, "{value_range: [low, high], colors: 1 or 3}")
    tensors = st.get("tensors")
    if not (isinstance(tensors, list) and all(isinstance(t, dict) for t in tensors)):
        raise bad("stream.tensors", tensors, "a list of {name, io, index, dtype, layout, shape, quant}")
    _check_io("stream.tensors", tensors, bad)
    for i, t in enumerate(tensors):
        if not isinstance(t.get("name"), str):
            raise bad(f"stream.tensors[{i}].name", t.get("name"), "a tensor name")
    for io, names in (("input", inputs), ("output", outputs)):
        mine = [t for t in tensors if t.get("io") == io]
        if sorted(t["name"] for t in mine) != sorted(names):
            raise bad("stream.tensors", [t.get("name") for t in mine], f"the {io}s " + ", ".join(names))
        if sorted(t.get("index", -1) for t in mine if _is_int(t.get("index"))) != list(range(len(names))):
            raise bad("stream.tensors", [t.get("index") for t in mine], f"{io} indices 0-{len(names) - 1}")
    for i, t in enumerate(tensors):
        if t.get("io") not in ("input", "output"):
            raise bad(f"stream.tensors[{i}].io", t.get("io"), "input or output")
        if t.get("layout") not in LAYOUTS:
            raise bad(f"stream.tensors[{i}].layout", t.get("layout"), "one of " + ", ".join(LAYOUTS))
        shape = t.get("shape")
        if shape is not None and not (isinstance(shape, list) and all(_is_side(d) for d in shape)):
            raise bad(f"stream.tensors[{i}].shape", shape, "null or a list of positive sizes")


_CLIP_KINDS = ("clip", "window")
_CLIP_LAYOUTS = ("NTCHW", "NTHWC")


def _check_clip(data: dict[str, Any], bad: Any) -> None:
    """The ``clip`` entry: kind, frames, overlap (< frames; a window's ``frames - 1``), the I/O names (those
    of ``inputs`` / ``outputs``), layout (the artifact's), min_side and multiple (the fixed size obeys them)."""
    c = data["clip"]
    if not isinstance(c, dict):
        raise bad("clip", c, "an object {kind, frames, overlap, input, output, layout, min_side, multiple}")
    if c.get("kind") not in _CLIP_KINDS:
        raise bad("clip.kind", c.get("kind"), "clip or window")
    t: Any = c.get("frames")
    if not (_is_int(t) and 1 <= t <= 1024):
        raise bad("clip.frames", t, "an integer 1-1024")
    ov: Any = c.get("overlap")
    want_ov = "frames - 1" if c["kind"] == "window" else f"an integer 0-{(t - 1) // 2}"
    if not (_is_int(ov) and (ov == t - 1 if c["kind"] == "window" else 0 <= 2 * ov < t)):
        raise bad("clip.overlap", ov, want_ov)
    for field, io in (("input", "inputs"), ("output", "outputs")):
        names = [e.get("name") for e in data.get(io) or [] if isinstance(e, dict)]
        if not isinstance(c.get(field), str) or (names and c[field] not in names):
            raise bad(f"clip.{field}", c.get(field), f"the name of one of the artifact's {io}: {names}")
    want_layout = "NTHWC" if data.get("layout") == "NHWC" else "NTCHW"
    if c.get("layout") not in _CLIP_LAYOUTS or c["layout"] != want_layout:
        raise bad("clip.layout", c.get("layout"), f"{want_layout} (the manifest's layout)")
    for field in ("min_side", "multiple"):
        if not _is_side(c.get(field)):
            raise bad(f"clip.{field}", c.get(field), f"an integer 1-{MAX_SIDE}")
    shape = data.get("input_shape")
    if not (isinstance(shape, dict) and shape.get("mode") == "fixed"):
        raise bad("input_shape", shape, "a fixed size (a clip / window artifact takes one frame size)")
    h, w = shape["size"]
    if min(h, w) < c["min_side"] or h % c["multiple"] or w % c["multiple"]:
        raise bad(
            "input_shape.size",
            [h, w],
            f"sides >= clip.min_side {c['min_side']}, multiples of {c['multiple']}",
        )


def _check_color(data: dict[str, Any], bad: Any) -> None:
    """``color`` exactly one of :func:`color_entry`'s entries; ``args.colors`` (when given) 1 or 3 and equal."""
    args = data.get("args")
    arg_colors = args.get("colors") if isinstance(args, dict) else None
    if arg_colors is not None and not (_is_int(arg_colors) and arg_colors in COLORS):
        raise bad("args.colors", arg_colors, "1 or 3")
    if "color" not in data:
        return
    color = data["color"]
    known = [e for e in _COLOR_ENTRIES.values() if color == e and isinstance(color, dict)]
    if not known or not _is_int(color.get("colors")):
        entries = " or ".join(json.dumps(e) for e in _COLOR_ENTRIES.values())
        raise bad("color", color, entries)
    if arg_colors is not None and arg_colors != color["colors"]:
        raise bad("color.colors", color["colors"], f"{arg_colors}, as args.colors says")


def _check_input_shape(spec: Any, bad: Any) -> None:
    side = f"an integer 1-{MAX_SIDE}"
    if not isinstance(spec, dict) or spec.get("mode", "any") not in SHAPE_MODES:
        raise bad("input_shape", spec, "{mode: " + " | ".join(SHAPE_MODES) + ", ...}")
    mode = spec.get("mode", "any")
    if mode == "fixed" and not _is_hw(spec.get("size")):
        raise bad("input_shape.size", spec.get("size"), f"[height, width], each {side}")
    if mode == "dynamic":
        lo: Any = spec.get("min")
        hi: Any = spec.get("max")
        if not (_is_side(lo) and _is_side(hi) and lo <= hi):
            raise bad("input_shape", spec, f"min <= max, each {side}")
    if mode == "enumerated":
        sizes = spec.get("sizes")
        if not (isinstance(sizes, list) and sizes and all(_is_hw(s) for s in sizes)):
            raise bad("input_shape.sizes", sizes, f"a non-empty list of [height, width], each {side}")


def _check_io(field: str, entries: Any, bad: Any) -> None:
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise bad(field, entries, "a list of {name, dtype, quant, ...} objects")
    for i, e in enumerate(entries):
        if "dtype" in e and e["dtype"] not in IO_DTYPES:
            raise bad(f"{field}[{i}].dtype", e["dtype"], "one of " + ", ".join(IO_DTYPES))
        q = e.get("quant")
        if q is None:
            continue
        ok = (
            isinstance(q, dict)
            and _is_num(q.get("scale"))
            and q["scale"] > 0
            and _is_int(q.get("zero_point"))
        )
        if not ok or not -(1 << 16) <= q["zero_point"] <= 1 << 16:
            raise bad(
                f"{field}[{i}].quant", q, "null or {scale: a finite number > 0, zero_point: an integer}"
            )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_side(v: Any) -> bool:
    return _is_int(v) and 1 <= v <= MAX_SIDE


def _is_hw(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_is_side(x) for x in v)


def _show(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_artifact_sha256(artifact: str | os.PathLike[str], manifest: dict[str, Any] | None) -> None:
    """Refuse an artifact whose bytes no longer hash to its manifest's ``artifact_sha256``.

    A manifest without ``artifact_sha256`` (or no manifest) has nothing to compare with and passes. Hashing
    reads the whole artifact (a folder artifact: every file): about 0.08 s per 50 MB on one server core
    with the file in the page cache.

    Raises:
        RuntimeBackendError: The hashes differ.
    """
    want = (manifest or {}).get("artifact_sha256")
    if not want:
        return
    if sha256_path(artifact) != want:
        raise RuntimeBackendError(
            artifact,
            "the artifact's sha256 does not match its manifest (modified after export?); "
            "re-export it or pass --no-check-sha256",
        )


def io_names(artifact: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """The names of the artifact's inputs and outputs in order, from the manifest beside it (none, or one
    without names: ``input`` -> ``output``). Formats whose tensors have no names (ExecuTorch, PT2) take
    and give them in this order."""
    manifest = read_manifest(artifact, required=False) or {}
    names = [[e.get("name") for e in manifest.get(k) or []] for k in ("inputs", "outputs")]
    if all(names) and all(isinstance(n, str) for ns in names for n in ns):
        return names[0], names[1]
    return ["input"], ["output"]


def record_verification(artifact: str | os.PathLike[str], result: dict[str, Any]) -> dict[str, Any] | None:
    """Store ``result`` as the manifest's ``verification``; returns the updated manifest (None: no manifest)."""
    data = read_manifest(artifact, required=False)
    if data is None:
        return None
    data["verification"] = result
    write_manifest(manifest_path(artifact), data)
    return data
