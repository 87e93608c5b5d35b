"""Inference engines: the torch model under autocast, or the same model converted once to OpenVINO and cached.

A runner maps a normalised float32 batch (N x 3 x H x W) to float32 logits (N x C x H x W): torch tensors on the
torch engine, NumPy arrays on OpenVINO (which then never imports torch once its IR is cached). The
OpenVINO IR is converted from the torch model on first use and cached in the user cache directory under a key
made of the weights' hash, the architecture and the OpenVINO version, so every later run (and every worker
process) only compiles it. A checkpoint file's own hash also points at its IR (``by-file/``), so a run whose IR is
cached never builds the torch model at all (no segmentation_models_pytorch/timm/torchvision import, ~3 s).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bldgseg.devices import resolve_device
from bldgseg.errors import DeviceError
from bldgseg.files import file_digest  # noqa: F401  (re-exported: engines' callers hash checkpoints)
from bldgseg.precision import InferenceChoice

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

__all__ = ["Runner", "build_runner", "cache_dir", "file_digest", "openvino_ir_path", "weights_digest"]

#: ``runner(x)``: normalised float32 batch -> float32 logits (torch tensors on the device, or NumPy arrays).
Runner = Callable[[Any], Any]
#: A model, or a function that builds it (called only when the chosen engine needs the torch model).
ModelSource = Any
#: A card's per-channel ``(mean, std)`` in 0-1 units.
InputStats = tuple[Sequence[float], Sequence[float]]
_OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_CONVERT_LOCK = threading.Lock()


def cache_dir() -> Path:
    """``$BLDGSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/bldgseg``, else ``~/.cache/bldgseg``."""
    if os.environ.get("BLDGSEG_CACHE_DIR"):
        return Path(os.environ["BLDGSEG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bldgseg"


def weights_digest(model: nn.Module) -> str:
    """sha256 (16 hex digits) of the model's class and its state dict: names, shapes, dtypes and values."""
    import torch

    digest = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def build_runner(
    model: ModelSource,
    device: Any,
    choice: InferenceChoice,
    tile_size: int,
    weights_file: str | None = None,
    int8_ir: Path | None = None,
    threads: int | None = None,
    input_stats: InputStats | None = None,
) -> tuple[Runner, InferenceChoice, torch.device | None]:
    """The runner for ``choice``, the choice as it ended up (an automatic OpenVINO engine that cannot convert the
    model falls back to torch, and says so; an OpenVINO asked for raises :class:`DeviceError`), and the torch
    device the runner takes its batches on (None for OpenVINO: NumPy arrays).

    ``model`` may be a function that builds it: with ``weights_file`` (:func:`file_digest` of the checkpoint)
    and that file's IR cached, the OpenVINO engine never calls it. ``int8_ir``: the checkpoint's shipped int8
    IR, which precision int8 runs (without it, int8 raises :class:`DeviceError`). ``device``: a ``--device``
    name or a ``torch.device``. ``threads``: CPU threads for the model (default: the engine's own choice).
    ``input_stats``: the card's ``(mean, std)``; OpenVINO then takes uint8 batches and normalises them inside the
    compiled model (no float copy of the batch in Python; torch runners take normalised batches either way)."""
    model = _Lazy(model)
    if choice.precision == "int8":
        return _int8_runner(int8_ir, threads, input_stats), choice, None
    if choice.engine == "openvino":
        try:
            return (*_openvino_runner(model, choice, tile_size, weights_file, threads, input_stats), None)
        except DeviceError:
            raise
        except Exception as exc:  # a model OpenVINO cannot trace or compile
            if not choice.engine_auto:
                raise DeviceError(
                    f"engine openvino: cannot convert the model ({' '.join(str(exc).split())[:200]}); "
                    "use --engine torch"
                ) from exc
            reason = f"{choice.reason}; OpenVINO could not convert the model ({type(exc).__name__}), torch used"
            choice = replace(choice, engine="torch", reason=reason)
    torch_device = resolve_device(device)
    return _torch_runner(model, torch_device, choice.precision, threads), choice, torch_device


class _Lazy:
    """A model built on the first call and kept (``ModelSource`` either way)."""

    def __init__(self, source: ModelSource):
        is_model = hasattr(source, "state_dict")  # a torch module, not a function that builds one
        self._model = source if is_model else None
        self._build = None if is_model else source

    def __call__(self) -> nn.Module:
        if self._model is None:
            self._model = self._build()
        return self._model


def _torch_runner(model: _Lazy, device: torch.device, precision: str, threads: int | None) -> Runner:
    """The model on ``device`` in eval mode and channels-last, under autocast for bf16 / fp16."""
    import torch

    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    net = model().to(device).eval().to(memory_format=torch.channels_last)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
            return net(x).float()

    return run


def _openvino_runner(
    model: _Lazy,
    choice: InferenceChoice,
    tile_size: int,
    weights_file: str | None,
    threads: int | None,
    input_stats: InputStats | None,
) -> tuple[Runner, InferenceChoice]:
    import openvino as ov

    xml = _ir_of_file(weights_file) if weights_file else None
    if xml is None:
        xml = openvino_ir_path(model(), tile_size)
        if weights_file:
            _remember_ir_of_file(weights_file, xml)
    core = ov.Core()
    core.set_property({"CACHE_DIR": str(xml.parent / "compiled")})
    compiled = core.compile_model(
        _with_input_stats(core, xml, input_stats),
        "CPU",
        {"INFERENCE_PRECISION_HINT": _OPENVINO_HINTS[choice.precision], **_cpu_config(threads)},
    )
    used = _precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    if used != choice.precision:
        choice = replace(choice, precision=used, reason=f"{choice.reason}; OpenVINO runs {used} on this CPU")
    return _compiled_runner(compiled), choice


def _int8_runner(xml: Path | None, threads: int | None, input_stats: InputStats | None) -> Runner:
    """The shipped int8 IR, compiled (OpenVINO picks bf16 or fp32 for the layers left unquantized)."""
    import openvino as ov

    if xml is None or not Path(xml).exists():
        raise DeviceError(
            "precision int8: this model has no int8 IR made from its weights (<name>.int8.xml beside them); "
            "make one with scripts/quantize_int8.py, or use --precision auto, bf16 or fp32"
        )
    core = ov.Core()
    core.set_property({"CACHE_DIR": str(cache_dir() / "openvino" / "compiled")})
    compiled = core.compile_model(_with_input_stats(core, Path(xml), input_stats), "CPU", _cpu_config(threads))
    return _compiled_runner(compiled)


def _with_input_stats(core: Any, xml: Path, input_stats: InputStats | None) -> Any:
    """The IR (its path), or with ``input_stats`` the IR read with a uint8 input normalised in the graph."""
    if input_stats is None:
        return str(xml)
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    mean, std = input_stats
    ppp = PrePostProcessor(core.read_model(str(xml)))
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NCHW"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
    steps.mean([float(m) * 255.0 for m in mean]).scale([float(v) * 255.0 for v in std])
    return ppp.build()


def _cpu_config(threads: int | None) -> dict[str, Any]:
    """OpenVINO CPU settings: latency (one batch at a time on every thread), ``threads`` when given."""
    return {"PERFORMANCE_HINT": "LATENCY", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}


def _compiled_runner(compiled: Any) -> Runner:
    def run(x: Any) -> Any:
        request = compiled.create_infer_request()  # one per call: requests are not thread-safe
        return request.infer([np.ascontiguousarray(x)])[0]  # a copy owned by the caller

    return run


def _precision_name(hint: Any) -> str:
    """OpenVINO's element type (``f32``, ``bf16``, ``f16``) as a ``--precision`` name."""
    text = str(getattr(hint, "get_type_name", lambda: hint)()).lower()
    return {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "f16": "fp16"}.get(text, text)


def _file_index(weights_file: str) -> Path:
    import openvino as ov

    version = ov.get_version().split("-")[0]
    return cache_dir() / "openvino" / "by-file" / f"{weights_file}-ov{version}.txt"


def _ir_of_file(weights_file: str) -> Path | None:
    """The cached IR a checkpoint file converted to, or None (never converted, or the IR was removed)."""
    index = _file_index(weights_file)
    try:
        xml = index.parent.parent / index.read_text().strip() / "model.xml"
    except OSError:
        return None
    return xml if xml.exists() else None


def _remember_ir_of_file(weights_file: str, xml: Path) -> None:
    index = _file_index(weights_file)
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = index.with_name(f".{index.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(f"{xml.parent.name}\n")
    tmp.replace(index)


def openvino_ir_path(model: nn.Module, tile_size: int) -> Path:
    """The cached OpenVINO IR (``model.xml``) of ``model``, converted and checked now when not cached yet.

    Written to a temporary folder and renamed into place, so concurrent workers never read half an IR. A model
    that cannot be converted faithfully is remembered (``<key>.refused``) and raises ``ValueError`` at once."""
    import openvino as ov

    version = ov.get_version().split("-")[0]
    folder = cache_dir() / "openvino" / f"{weights_digest(model)}-ov{version}"
    xml, refused = folder / "model.xml", folder.with_suffix(".refused")
    with _CONVERT_LOCK:
        if xml.exists():
            return xml
        if refused.exists():
            raise ValueError(refused.read_text().strip())
        folder.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            ov_model = _convert(model, tile_size)
            _check_conversion(model, ov_model, tile_size)
        except (MemoryError, OSError):  # not the model's fault: try again next time
            raise
        except Exception as exc:
            refused.write_text(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}\n")
            raise
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            ov.save_model(ov_model, str(tmp / "model.xml"), compress_to_fp16=False)
            (tmp / "converted_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
            if folder.exists() and not xml.exists():  # an IR folder whose model.xml was removed
                shutil.rmtree(folder, ignore_errors=True)
            try:
                tmp.rename(folder)
            except OSError:  # another process got there first
                if not xml.exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return xml


def _check_conversion(model: nn.Module, ov_model: Any, tile_size: int) -> None:
    """Refuse an IR whose fp32 logits differ from the torch model's on random batches of two sizes.

    Tracing records torch operations only: a model with Python or NumPy logic in its forward pass converts
    without an error yet computes something else; this catches it before the IR is cached."""
    import openvino as ov
    import torch

    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    generator = torch.Generator().manual_seed(0)
    for batch, size in ((2, tile_size), (1, max(32, tile_size // 2))):
        x = torch.randn(batch, 3, size, size, generator=generator)
        with torch.no_grad():
            expected = model(x).float()
        got = torch.from_numpy(compiled.create_infer_request().infer([x.numpy()])[0].copy())
        scale = float(expected.abs().max()) + 1e-6
        if got.shape != expected.shape or float((got - expected).abs().max()) > 1e-3 * max(scale, 1.0):
            raise ValueError(
                f"OpenVINO's output differs from the torch model's (shape {tuple(got.shape)} vs "
                f"{tuple(expected.shape)}); the model's forward pass is not a pure torch graph"
            )


def _convert(model: nn.Module, tile_size: int) -> Any:
    """Trace ``model`` (float32, on the CPU) into an OpenVINO model with a dynamic batch and image size."""
    import openvino as ov
    import torch

    example = torch.zeros(1, 3, tile_size, tile_size).contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit.trace deprecation and tracer warnings
        return ov.convert_model(model, example_input=example, input=[ov.PartialShape([-1, 3, -1, -1])])
