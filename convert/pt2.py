"""PT2 target: the ``torch.export`` ExportedProgram saved with ``torch.export.save``, the host-side reference.

For GPU / CPU servers that run PyTorch itself: no converter between the model and the file, so the artifact
computes what the model computes (fp32, or fp16 inside float32 I/O casts), at a fixed size or for every size
of a dynamic H / W range (``torch.export.Dim``). Shape facts the solver cannot prove over a range (window
padding smaller than the input) stay in the program as runtime assertions, and are first evaluated on every
size of the range (:func:`.dynamic.check_asserts`): a range where one fails is refused at export. The program
also refuses sizes outside its range when it runs. The manifest fields are also stored inside the archive as ``extra_files["edge_sr.json"]``.
Loading uses ``torch.export.load``, whose weights are read without running pickled code. A program with
several inputs / outputs (a video step) takes and gives them in the order of the manifest's ``inputs`` /
``outputs`` (the ExecuTorch runner reads the same names).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from edge_sr.convert.manifest import io_names
from edge_sr.convert.spec import ExportSpec
from edge_sr.convert.target import (
    GraphIO,
    Size,
    Timed,
    Timer,
    fill_shape,
    io_entries,
    profile_torch,
    random_input,
    time_calls,
)
from torch import nn

from edge_sr.errors import ConversionError, RuntimeBackendError

NAME = "pt2"
SUFFIX = ".pt2"
FP16_BY_CAST = True  # a float16 program inside float32 I/O casts
QUANT_MODES: tuple[str, ...] = ()  # a server runs the float program; INT8 is a phone format's business
PT2E_MODES: tuple[str, ...] = ()
INT8_IO = False
FLOAT_IO_CLAMP = False
FOLD_QUANTIZE = True
METADATA_FILE = "edge_sr.json"


@dataclass(frozen=True)
class Options:
    """PT2 export options.

    Attributes:
        strict: ``torch.export``'s strict mode (trace with TorchDynamo's guards).
    """

    strict: bool = False


def check_spec(spec: ExportSpec) -> None:
    """Raise ``ConversionError`` for what a PT2 archive does not offer."""
    if spec.io == "image":
        raise ConversionError(None, "pt2 has no image I/O; use io='tensor' (image I/O is coreml only)")
    if spec.sizes:
        raise ConversionError(None, "pt2 has no enumerated shapes; use a dynamic range (--dynamic MIN:MAX)")
    if spec.precision == "int8":
        raise ConversionError(None, "pt2 holds fp32 or fp16 programs; int8 is for the phone targets")


def export(
    model: nn.Module,
    io: GraphIO,
    spec: ExportSpec,
    path: Path,
    metadata: dict[str, str],
    options: Options,
) -> dict[str, Any]:
    """``torch.export.export`` then ``torch.export.save`` to ``path``; returns the manifest's I/O entries."""
    if spec.dynamic is None:
        ep = torch.export.export(model, io.examples, strict=options.strict)
    else:
        from edge_sr.convert.dynamic import check_asserts

        ep = torch.export.export(
            model,
            io.examples,
            dynamic_shapes=io.dynamic_shapes,
            strict=options.strict,
            prefer_deferred_runtime_asserts_over_guards=True,
        )
        check_asserts(ep, spec.hw_axes)  # kept in the program: torch checks them on every call
    # torch.export keeps the example inputs and would save them in the archive (11 MB for a video step's
    # 720p state): the program does not need them
    ep._example_inputs = None
    with path.open("wb") as f:  # a file object: torch.export.save would add ".pt2" to a suffix-less path
        torch.export.save(ep, f, extra_files={METADATA_FILE: json.dumps(metadata, sort_keys=True)})
    with torch.no_grad():
        outs = model(*io.examples)
    outs = outs if isinstance(outs, tuple | list) else (outs,)
    ops = sorted(
        {str(n.target) for n in ep.graph.nodes if n.op == "call_function" and hasattr(n.target, "_schema")}
    )
    return {
        "inputs": io_entries(io.input_names, io.examples, spec),
        "outputs": io_entries(io.output_names, outs, spec),
        "target_info": {"torch": torch.__version__, "ops": ops},
    }


def _load(path: str | os.PathLike[str], extra_files: dict[str, Any] | None = None) -> Any:
    try:
        with Path(path).open("rb") as f:
            return torch.export.load(f, extra_files=extra_files)
    except FileNotFoundError:
        raise RuntimeBackendError(path, "no such artifact") from None
    except Exception as e:  # a corrupt archive raises anything from zipfile to the deserializer
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise RuntimeBackendError(path, f"torch.export cannot load it ({first})") from None


def read_embedded(path: str | os.PathLike[str]) -> dict[str, str]:
    """The manifest fields stored in the archive's ``extra_files``."""
    extra = {METADATA_FILE: ""}
    _load(path, extra)
    return json.loads(extra[METADATA_FILE]) if extra[METADATA_FILE] else {}


# ---------------------------------------------------------------- quantization (none: float programs)


def quantizer(*, qat: bool = False, mode: str | None = None) -> Any:
    """PT2 archives are float programs: no quantizer."""
    return None


def quant_scheme(mode: str | None = None) -> str:
    raise ConversionError(None, "pt2 holds fp32 or fp16 programs; int8 is for the phone targets")


def quant_options(quantizer: Any, mode: str | None = None) -> Options:
    return Options()


# ---------------------------------------------------------------- runner and profiler


class Runner:
    """The saved program's module in eager PyTorch; ``forward`` takes arrays in the artifact's layout.

    ``threads`` sets torch's intra-op thread count (process-wide).
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        self.path = Path(path)
        if threads:
            torch.set_num_threads(int(threads))
        self.program = _load(path)
        self.module = self.program.module()
        self.input_names, self.output_names = io_names(path)

    @torch.no_grad()
    def forward(self, x: np.ndarray) -> np.ndarray:
        try:
            y = self.module(torch.from_numpy(np.ascontiguousarray(x)))
        except (RuntimeError, AssertionError, ValueError) as e:  # the program's own shape guards
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise RuntimeBackendError(
                self.path, f"the program refused a {tuple(x.shape)} input ({first})"
            ) from None
        return y.numpy()

    @torch.no_grad()
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for inputs by name, in the program's order (the manifest's)."""
        if set(feeds) != set(self.input_names):
            raise RuntimeBackendError(self.path, f"the program takes {self.input_names}, not {sorted(feeds)}")
        try:
            ys = self.module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names))
        except (RuntimeError, AssertionError, ValueError) as e:  # the program's own shape guards
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise RuntimeBackendError(self.path, f"the program refused its inputs ({first})") from None
        ys = ys if isinstance(ys, tuple | list) else (ys,)
        return {n: y.numpy() for n, y in zip(self.output_names, ys, strict=True)}


def _input_spec(program: Any) -> tuple[list[int | None], Any]:
    """The first user input's shape (None for symbolic sizes) and dtype."""
    for spec in program.graph_signature.input_specs:
        if spec.kind.name == "USER_INPUT":
            val = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == spec.arg.name)
            fake = val.meta["val"]
            return [int(d) if isinstance(d, int) else None for d in fake.shape], fake.dtype
    raise RuntimeBackendError(None, "the program has no user input")


def profile(
    path: Path,
    *,
    size: Size,
    runs: int,
    warmup: int,
    threads: int,
    want_ops: bool,
    layout: str | None,
    timer: Timer = time_calls,
) -> Timed:
    """Latency of the saved program's module; operators from ``torch.profiler`` over ``OPS_RUNS`` runs."""
    program = _load(path)
    module = program.module()
    dims, dtype = _input_spec(program)
    shape = fill_shape(dims, size, layout)
    x = torch.from_numpy(random_input(shape, np.dtype(str(dtype).replace("torch.", ""))))
    times, ops, note = profile_torch(
        module, x, runs=runs, warmup=warmup, threads=threads, want_ops=want_ops, timer=timer
    )
    return Timed(times, shape, ops, note)
