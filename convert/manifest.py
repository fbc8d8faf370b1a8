"""The manifest: ``<artifact>.json`` beside every artifact (``model.onnx`` -> ``model.onnx.json``).

It says everything a runner or an app needs to feed the artifact and trust it: architecture and args, scale,
form, precision and quantization (with int8 I/O scale / zero point), accepted input sizes, layout, value range,
I/O dtypes, checksums of the source checkpoint and of the artifact, library versions, and the verification
verdict once verified. The same fields go inside the artifact where the format has room for them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from importlib import metadata as _md
from pathlib import Path
from typing import Any

from edge_sr.errors import InputError
from edge_sr.io_utils import atomic_path

FORMAT = "edge-sr-manifest/1"
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
) -> dict[str, Any]:
    """The manifest content known before the artifact exists (checksum and size are added after writing).

    ``inputs`` / ``outputs`` entries: ``{"name", "dtype", "layout", "value_range", "quant": io_quant(...)|None}``.
    """
    return {
        "format": FORMAT,
        "target": target,
        "artifact": artifact,
        "arch": arch,
        "args": args,
        "scale": int(scale),
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


def embedded_metadata(manifest: dict[str, Any]) -> dict[str, str]:
    """String key/values to store inside the artifact (format metadata fields take strings)."""
    keep = ("arch", "scale", "form", "precision", "layout", "io", "pixel_shuffle")
    meta = {f"edge_sr.{k}": str(manifest[k]) for k in keep}
    meta["edge_sr.args"] = json.dumps(manifest["args"], sort_keys=True)
    meta["edge_sr.input_shape"] = json.dumps(manifest["input_shape"], sort_keys=True)
    meta["edge_sr.quantization"] = json.dumps(manifest["quantization"], sort_keys=True)
    meta["edge_sr.format"] = FORMAT
    return meta


def write_manifest(path: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` as JSON to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(artifact: str | os.PathLike[str], *, required: bool = True) -> dict[str, Any] | None:
    """The manifest beside ``artifact``; None when absent and not ``required``."""
    mp = manifest_path(artifact)
    if not mp.is_file():
        if required:
            raise InputError(mp, "no manifest beside the artifact; export it with `edge-sr convert`")
        return None
    try:
        data = json.loads(mp.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(mp, f"unreadable manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(mp, f"not an edge-sr manifest (expected format {FORMAT})")
    return data


def record_verification(artifact: str | os.PathLike[str], result: dict[str, Any]) -> dict[str, Any] | None:
    """Store ``result`` as the manifest's ``verification``; returns the updated manifest (None: no manifest)."""
    data = read_manifest(artifact, required=False)
    if data is None:
        return None
    data["verification"] = result
    write_manifest(manifest_path(artifact), data)
    return data
