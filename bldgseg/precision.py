"""Which numeric precision and inference engine a run uses on this hardware, and why (a pure choice + probes)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from bldgseg.errors import DeviceError, InputError

__all__ = [
    "ENGINES",
    "INT8_FLAGS",
    "NATIVE_BF16_FLAGS",
    "PRECISIONS",
    "InferenceChoice",
    "check_inference_names",
    "choose_inference",
    "detect_inference",
    "int8_hint",
    "int8_hint_applies",
    "openvino_available",
    "read_cpu_flags",
]

#: ``--precision`` values. ``int8`` runs a checkpoint's shipped int8 OpenVINO IR (``<name>.int8.xml`` beside the
#: weights, quantized on training crops by ``scripts/quantize_int8.py``): CPU and OpenVINO only, never chosen by auto.
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
#: ``--engine`` values.
ENGINES = ("auto", "torch", "openvino")
#: CPU flags (``/proc/cpuinfo``) that mean bf16 matrix arithmetic in hardware.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: CPU flags that mean int8 dot products in hardware (OpenVINO's int8 kernels use them).
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
OPENVINO_HINT = "pip install 'bldgseg[openvino]'"


@dataclass(frozen=True)
class InferenceChoice:
    """The precision and engine a predictor runs with, and the reason in words (recorded in the run)."""

    precision: str
    engine: str
    reason: str
    #: The engine was chosen, not asked for: a model OpenVINO cannot convert falls back to torch.
    engine_auto: bool = False

    def describe(self) -> str:
        """One line, e.g. ``openvino bf16 (CPU has avx512_bf16; OpenVINO installed)``."""
        return f"{self.engine} {self.precision} ({self.reason})"


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is no such file, e.g. macOS)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / ARM
            return frozenset(value.split())
    return frozenset()


def openvino_available() -> bool:
    """Whether the optional OpenVINO runtime is installed (without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def detect_inference(precision: str = "auto", engine: str = "auto", device_type: str = "cpu") -> InferenceChoice:
    """:func:`choose_inference` for this machine: its CPU flags and whether OpenVINO is installed."""
    cpu = device_type == "cpu"
    return choose_inference(
        precision,
        engine,
        device_type,
        read_cpu_flags() if cpu else frozenset(),
        openvino_available() if cpu and engine != "torch" else False,
    )


def choose_inference(
    precision: str = "auto",
    engine: str = "auto",
    device_type: str = "cpu",
    cpu_flags: frozenset[str] | set[str] = frozenset(),
    openvino: bool = False,
) -> InferenceChoice:
    """The precision and engine for a device, from the requested values and the hardware (pure).

    ``auto`` precision: fp16 autocast on CUDA; bf16 on CPUs with ``amx_bf16`` or ``avx512_bf16``; fp32
    elsewhere. ``auto`` engine: OpenVINO on the CPU when ``openvino`` (installed), else torch; torch on CUDA.
    bf16 asked for on a CPU without those flags runs emulated (correct, slower than fp32). fp16 on the CPU,
    OpenVINO on CUDA and an OpenVINO engine that is not installed raise :class:`DeviceError`.
    """
    precision, engine = precision.lower(), engine.lower()
    check_inference_names(precision, engine)
    if device_type == "cuda":
        return _choose_cuda(precision, engine)
    if device_type != "cpu":
        raise DeviceError(f"device type {device_type!r} is not supported; use cpu or cuda")
    if precision == "int8":
        return _choose_int8(engine, openvino, frozenset(cpu_flags))
    precision, why = _cpu_precision(precision, frozenset(cpu_flags))
    if engine == "auto":
        chosen = "openvino" if openvino else "torch"
        installed = "OpenVINO installed" if openvino else f"OpenVINO not installed ({OPENVINO_HINT})"
        return InferenceChoice(precision, chosen, f"{why}; {installed}", engine_auto=True)
    if engine == "openvino" and not openvino:
        raise DeviceError(f"engine openvino: OpenVINO is not installed; {OPENVINO_HINT}, or use --engine torch")
    return InferenceChoice(precision, engine, f"{why}; engine {engine} as asked")


def int8_hint_applies(choice: InferenceChoice, asked: str) -> bool:
    """Whether ``auto`` settled for OpenVINO fp32 (a CPU without bf16 arithmetic), where int8 is the fast path."""
    return asked.lower() == "auto" and (choice.engine, choice.precision) == ("openvino", "fp32")


def int8_hint(choice: InferenceChoice, asked: str, has_int8_ir: bool) -> str | None:
    """A pointer to ``--precision int8`` where :func:`int8_hint_applies` and the model ships an int8 IR made
    from its own weights; None otherwise (pure)."""
    if not (has_int8_ir and int8_hint_applies(choice, asked)):
        return None
    return (
        "faster here: --precision int8 runs this model's shipped int8 IR (about 1.9x OpenVINO fp32 on an "
        "AVX2-only CPU; pixel IoU against footprints within 0.005 of fp32, masks further from fp32's than bf16's: "
        "docs/accuracy.md)"
    )


def check_inference_names(precision: str, engine: str) -> None:
    """Raise :class:`InputError` for a precision or engine name that is not one of the choices."""
    if precision.lower() not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not understood; use one of {', '.join(PRECISIONS)}")
    if engine.lower() not in ENGINES:
        raise InputError(f"engine {engine!r} is not understood; use one of {', '.join(ENGINES)}")


def _choose_cuda(precision: str, engine: str) -> InferenceChoice:
    if engine == "openvino":
        raise DeviceError("engine openvino runs on the CPU; use --device cpu, or --engine torch on CUDA")
    if precision == "int8":
        raise DeviceError("precision int8 runs on the CPU with OpenVINO; use --device cpu, or fp16 on CUDA")
    if precision == "auto":
        return InferenceChoice("fp16", "torch", "CUDA: fp16 autocast", engine_auto=engine == "auto")
    return InferenceChoice(precision, "torch", f"{precision} as asked on CUDA", engine_auto=engine == "auto")


def _choose_int8(engine: str, openvino: bool, flags: frozenset[str]) -> InferenceChoice:
    if engine == "torch":
        raise DeviceError("precision int8 runs with OpenVINO; use --engine openvino (or auto), or another precision")
    if not openvino:
        raise DeviceError(f"precision int8 needs OpenVINO, which is not installed; {OPENVINO_HINT}")
    vnni = [flag for flag in INT8_FLAGS if flag in flags]
    # measured on an AVX2-only AMD EPYC (docs/benchmarks.md): int8 still ~1.9x OpenVINO fp32 without VNNI
    has = f"CPU has {vnni[0]}" if vnni else "CPU has no VNNI/AMX int8 instructions: AVX2 int8 kernels"
    return InferenceChoice("int8", "openvino", f"int8 as asked ({has})", engine_auto=engine == "auto")


def _cpu_precision(precision: str, flags: frozenset[str]) -> tuple[str, str]:
    """The CPU precision and why."""
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    has = f"CPU has {native[0]}" if native else "CPU has neither amx_bf16 nor avx512_bf16"
    if precision == "fp16":
        raise DeviceError(
            "precision fp16 is for CUDA: on the CPU it is emulated and far slower than fp32; "
            "use --precision bf16 or fp32 (or auto)"
        )
    if precision == "auto":
        return ("bf16", has) if native else ("fp32", has)
    if precision == "bf16" and not native:
        return "bf16", f"bf16 as asked, emulated ({has}): expect it slower than fp32"
    return precision, f"{precision} as asked ({has})"
