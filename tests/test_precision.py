"""Choosing precision and engine for the hardware: a pure function of the CPU flags, the device and OpenVINO."""

from __future__ import annotations

from pathlib import Path

import pytest

from bldgseg.errors import DeviceError, InputError
from bldgseg.precision import choose_inference, int8_hint, read_cpu_flags
from bldgseg.report import inference_hint

AMX = frozenset({"avx2", "avx512f", "amx_bf16", "amx_tile"})
AVX512_BF16 = frozenset({"avx2", "avx512f", "avx512_bf16"})
AVX2 = frozenset({"avx2", "fma"})


@pytest.mark.parametrize(
    ("flags", "expected"), [(AMX, "bf16"), (AVX512_BF16, "bf16"), (AVX2, "fp32"), (frozenset(), "fp32")]
)
def test_auto_precision_on_the_cpu_follows_its_bf16_flags(flags, expected):
    choice = choose_inference("auto", "torch", "cpu", flags)
    assert (choice.precision, choice.engine) == (expected, "torch")
    assert ("has amx_bf16" in choice.reason) == ("amx_bf16" in flags)
    assert ("neither amx_bf16 nor avx512_bf16" in choice.reason) == (expected == "fp32")


def test_auto_precision_on_cuda_is_fp16_autocast_with_torch():
    choice = choose_inference("auto", "auto", "cuda", AMX, openvino=True)
    assert (choice.precision, choice.engine) == ("fp16", "torch") and "CUDA" in choice.reason


def test_auto_engine_is_openvino_on_the_cpu_when_installed_else_torch():
    assert choose_inference("auto", "auto", "cpu", AVX2, openvino=True).engine == "openvino"
    fallback = choose_inference("auto", "auto", "cpu", AVX2, openvino=False)
    assert fallback.engine == "torch" and "bldgseg[openvino]" in fallback.reason and fallback.engine_auto


def test_bf16_on_a_cpu_without_native_bf16_runs_emulated_and_says_so():
    choice = choose_inference("bf16", "torch", "cpu", AVX2)
    assert choice.precision == "bf16" and "emulated" in choice.reason


def test_explicit_choices_are_kept():
    assert choose_inference("fp32", "openvino", "cpu", AMX, openvino=True).precision == "fp32"
    assert choose_inference("bf16", "auto", "cuda").precision == "bf16"


@pytest.mark.parametrize(
    ("precision", "engine", "device", "openvino", "words"),
    [
        ("fp16", "torch", "cpu", False, "fp16 is for CUDA"),
        ("auto", "openvino", "cpu", False, "not installed"),
        ("auto", "openvino", "cuda", True, "runs on the CPU"),
        ("int8", "torch", "cpu", True, "use --engine openvino"),
        ("int8", "auto", "cpu", False, "needs OpenVINO"),
        ("int8", "auto", "cuda", False, "runs on the CPU with OpenVINO"),
    ],
)
def test_impossible_combinations_are_refused_with_the_fix(precision, engine, device, openvino, words):
    with pytest.raises(DeviceError, match=words):
        choose_inference(precision, engine, device, AVX2, openvino=openvino)


def test_int8_is_never_automatic_and_runs_openvino_when_asked():
    vnni = frozenset({"avx2", "avx512f", "avx512_vnni"})
    assert choose_inference("auto", "auto", "cpu", vnni, openvino=True).precision == "fp32"
    asked = choose_inference("int8", "auto", "cpu", vnni, openvino=True)
    assert (asked.precision, asked.engine) == ("int8", "openvino") and "avx512_vnni" in asked.reason
    assert "AVX2 int8 kernels" in choose_inference("int8", "openvino", "cpu", AVX2, openvino=True).reason


@pytest.mark.parametrize(("precision", "engine"), [("fp8", "auto"), ("int4", "torch"), ("auto", "onnx")])
def test_unknown_names_are_input_errors(precision, engine):
    with pytest.raises(InputError, match="use one of"):
        choose_inference(precision, engine, "cpu")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 amx_bf16\n\n")
    assert read_cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert read_cpu_flags(tmp_path / "missing") == frozenset()


def test_int8_hint_only_where_auto_settled_for_openvino_fp32_and_the_model_ships_int8():
    fp32_ov = choose_inference("auto", "auto", "cpu", AVX2, openvino=True)
    assert "--precision int8" in int8_hint(fp32_ov, "auto", has_int8_ir=True)
    assert int8_hint(fp32_ov, "auto", has_int8_ir=False) is None
    assert int8_hint(fp32_ov, "fp32", has_int8_ir=True) is None  # fp32 was asked for
    bf16 = choose_inference("auto", "auto", "cpu", frozenset({"avx512_bf16"}), openvino=True)
    assert int8_hint(bf16, "auto", has_int8_ir=True) is None
    torch_fp32 = choose_inference("auto", "auto", "cpu", AVX2, openvino=False)
    assert int8_hint(torch_fp32, "auto", has_int8_ir=True) is None


def test_inference_hint_reads_whether_the_bundled_model_ships_its_int8_ir():
    fp32_ov = choose_inference("auto", "auto", "cpu", AVX2, openvino=True)
    assert inference_hint("aerial-buildings", fp32_ov) is not None  # aerial-buildings.int8.xml beside it
    assert inference_hint("aerial-instances", fp32_ov) is None  # no int8 IR shipped
