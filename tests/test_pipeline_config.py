"""The resume hash: every RunConfig / UnitSettings field is hashed or left out on purpose, and hashed ones count."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import pytest

from bldgseg.pipeline.config import (
    RUN_CONFIG_UNHASHED,
    UNIT_SETTINGS_UNHASHED,
    RunConfig,
    UnitSettings,
    result_settings,
    unit_settings,
)
from bldgseg.runstate import config_hash

MODEL_KEYS = {"model", "model_weights_sha256", "model_card_sha256"}


def config(model: Path, **kw) -> RunConfig:
    kw.setdefault("output", Path("out.gpkg"))
    kw.setdefault("device", "cpu")
    return RunConfig(inputs=[Path("in")], model=str(model), **kw)


def digest(cfg: RunConfig, vectorize: bool = True) -> str:
    card, settings = unit_settings(cfg, vectorize=vectorize)
    return config_hash(result_settings(cfg, settings, card))


def test_every_field_is_hashed_or_left_out_on_purpose(red_roof_model):
    cfg = config(red_roof_model)
    card, settings = unit_settings(cfg, vectorize=True)
    hashed = set(result_settings(cfg, settings, card))
    for cls, unhashed in ((RunConfig, RUN_CONFIG_UNHASHED), (UnitSettings, UNIT_SETTINGS_UNHASHED)):
        names = {f.name for f in fields(cls)}
        forgotten = sorted(n for n in names if n not in hashed and n not in unhashed)
        assert not forgotten, f"{cls.__name__} fields neither hashed nor excluded: {forgotten}"
        assert set(unhashed) <= names, f"stale exclusions of {cls.__name__}: {sorted(set(unhashed) - names)}"
        assert all(reason for reason in unhashed.values())  # every exclusion says why
    both = {f.name for f in fields(RunConfig)} | {f.name for f in fields(UnitSettings)}
    assert hashed <= both | MODEL_KEYS


def test_a_new_option_is_hashed_by_default(red_roof_model):
    @dataclass
    class NewConfig(RunConfig):
        new_option: int = 1

    cfg = NewConfig(inputs=[Path("in")], output=Path("out.gpkg"), model=str(red_roof_model), device="cpu")
    card, settings = unit_settings(cfg, vectorize=True)
    values = result_settings(cfg, settings, card)
    assert values["new_option"] == 1
    assert config_hash(values) != config_hash(result_settings(replace(cfg, new_option=2), settings, card))


@pytest.mark.parametrize(
    "change",
    [
        {"threshold": 0.3},
        {"min_area_m2": 1.0},
        {"simplify_m": 0.5},
        {"regularize": True},
        {"hole_area_m2": 1.0},
        {"opening_m": 1.0},
        {"merge_fragments": True},
        {"split_core": 0.7},
        {"postprocess": False},
        {"texture": False},
        {"tta": True},
        {"tile_size": 32},
        {"overlap": 8},
        {"chunk_size": 1024},
        {"max_building_size_m": 20.0},
        {"glob": "*.jp2"},
        {"bands": (3, 2, 1)},
        {"ndsm": Path("ndsm.tif")},
        {"precision": "bf16"},
        {"engine": "torch"},
    ],
)
def test_changing_a_hashed_option_changes_the_hash(red_roof_model, change):
    assert digest(config(red_roof_model, **change)) != digest(config(red_roof_model))


def test_vectorizing_or_not_changes_the_hash(red_roof_model):
    assert digest(config(red_roof_model), vectorize=False) != digest(config(red_roof_model))


def test_grouping_instances_or_not_changes_the_hash(roof_instance_model):
    assert digest(config(roof_instance_model, instances=False)) != digest(config(roof_instance_model))


@pytest.mark.parametrize(
    "change",
    [
        {"device": "auto"},
        {"batch_size": 2},
        {"workers": 3},
        {"threads": 4},
        {"output": Path("elsewhere.gpkg")},
        {"overwrite": True},
        {"per_image": True},
        {"crs": "EPSG:4326"},
        {"run_dir": Path("rd")},
        {"resume": True},
        {"save_masks": Path("masks")},
    ],
)
def test_options_that_do_not_define_results_leave_the_hash_alone(red_roof_model, change):
    assert digest(config(red_roof_model, **change)) == digest(config(red_roof_model))


def test_options_are_hashed_as_resolved(red_roof_model):
    card, _ = unit_settings(config(red_roof_model), vectorize=True)
    assert digest(config(red_roof_model, threshold=card.threshold)) == digest(config(red_roof_model))
    assert digest(config(red_roof_model, instances=False)) == digest(config(red_roof_model))  # no instance head
