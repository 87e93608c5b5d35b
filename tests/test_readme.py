"""README claims, number for number: each figure the README states is read from it and compared here with the
code's default or the recorded measurement it quotes. (Behaviour behind the figures is tested elsewhere:
``test_area_end_to_end.py`` 0.5 %, ``test_street_job.py`` street heights, ``test_cli.py`` exit codes,
``test_distributed.py`` the unit killing its workers.) Measured benchmarks (memory, throughput) are not
asserted: ``scripts/bench_scale.py`` and ``docs/benchmarks.md`` reproduce them.
"""

from __future__ import annotations

import inspect
import json
import re

import pytest

from tests.conftest import REPO, SAMPLE

README = " ".join((REPO / "README.md").read_text().split())


def stated(pattern: str) -> tuple[str, ...]:
    """The groups of ``pattern`` in the README (whitespace-normalised); fails when the sentence changed."""
    found = re.search(pattern, README)
    assert found, f"README no longer says {pattern!r}: update the README check in tests/test_readme.py"
    return found.groups()


def test_run_defaults():
    from bldgseg.pipeline import RunConfig

    chunk, halo = stated(r"chunks of `--chunk-size` source pixels \((\d+)\) that read a halo of "
                         r"`--max-building-size` metres \((\d+)\)")  # fmt: skip
    config = inspect.signature(RunConfig).parameters
    assert (config["chunk_size"].default, config["max_building_size_m"].default) == (int(chunk), float(halo))


def test_model_and_training_resolution():
    from bldgseg.models import DEFAULT_MODEL, load_checkpoint
    from bldgseg.train.trainer import TrainConfig

    (default_gsd,) = stated(r"the default model works at ([\d.]+) m")
    (train_gsd,) = stated(r"Imagery is resampled to `--gsd` \(([\d.]+) m\)")
    (trained_at,) = stated(r"`aerial-buildings` \(bundled, default\).*? trained at ([\d.]+) m on")
    _, card = load_checkpoint(DEFAULT_MODEL)
    assert DEFAULT_MODEL == "aerial-buildings"
    assert card.gsd_m == float(default_gsd) == float(trained_at) == TrainConfig().gsd_m == float(train_gsd)


def test_satellite_sample_resolution():
    from bldgseg.io import open_raster_info

    chip, model = stated(r"# ([\d.]+) m WorldView-2 chip, resampled to the model's ([\d.]+) m")
    assert open_raster_info(SAMPLE / "satellite" / "atlanta_spacenet_sn4.tif").gsd_m == pytest.approx(
        float(chip), rel=0.02
    )
    assert float(model) == 0.3


def test_stretch_percentiles_and_matching_threshold():
    from bldgseg.evaluation import evaluate
    from bldgseg.io import STRETCH_PERCENTILES

    low, high = stated(r"robust (\d+)–(\d+) % stretch to 8 bits")
    assert (float(low), float(high)) == STRETCH_PERCENTILES
    (iou,) = stated(r"one-to-one matching at IoU ≥ ([\d.]+) \(the SpaceNet metric\)")
    assert inspect.signature(evaluate).parameters["iou_threshold"].default == float(iou)


def test_exit_codes():
    from bldgseg.cli.common import EXIT_CODES
    from bldgseg.errors import DeviceError, InputError, ModelError, OutputExistsError

    (text,) = stated(r"Exit codes: ([^.]+)\.")
    codes = dict(EXIT_CODES)
    by_meaning = {"bad input": InputError, "output exists": OutputExistsError, "model problem": ModelError,
                  "device problem": DeviceError}  # fmt: skip
    pairs = re.findall(r"(\d) ([a-z ]+?)(?:,|$)", text)
    assert [meaning for _, meaning in pairs] == ["success", *by_meaning]
    for code, meaning in pairs[1:]:
        assert codes[by_meaning[meaning]] == int(code), meaning


def test_instance_model_figures_are_its_cards_measurements():
    f1_instances, f1_default = stated(r"its\s+polygon F1 is ([\d.]+) against the default's ([\d.]+)")
    iou_instances, iou_default = stated(r"at pixel IoU ([\d.]+) vs ([\d.]+)")
    f1_sn2_instances, f1_sn2_default = stated(r"mean polygon F1 ([\d.]+) vs ([\d.]+)")

    def unseen(name: str) -> dict:
        card = json.loads((REPO / "bldgseg" / "models" / "weights" / f"{name}.json").read_text())
        return card["metrics"]["leave_one_city_out"]["cities"]

    instances, default = unseen("aerial-instances"), unseen("aerial-buildings")
    assert round(instances["Kampala"]["polygon_f1"], 3) == float(f1_instances)
    assert round(default["Kampala"]["polygon_f1"], 3) == float(f1_default)
    assert round(instances["Kampala"]["pixel_iou"], 3) == float(iou_instances)
    assert round(default["Kampala"]["pixel_iou"], 3) == float(iou_default)
    spacenet2 = [city for city in default if city != "Kampala"]
    assert len(spacenet2) == 4
    for cities, stated_f1 in ((instances, f1_sn2_instances), (default, f1_sn2_default)):
        assert round(sum(cities[c]["polygon_f1"] for c in spacenet2) / 4, 3) == float(stated_f1)


def test_dense_model_figures_are_its_cards_measurements():
    f1_dense, f1_default, iou_dense, iou_default, fragments = stated(
        r"its polygon F1 is ([\d.]+) against the default's ([\d.]+) at pixel IoU ([\d.]+) vs ([\d.]+) "
        r"\(fragments ([\d.]+) %\)"
    )
    mean_f1 = stated(r"mean polygon F1\s+ties the default's \(([\d.]+) vs ([\d.]+)\)")
    mean_iou = stated(r"its mean pixel IoU is lower \(([\d.]+) vs ([\d.]+)\)")

    def unseen(name: str) -> dict:
        card = json.loads((REPO / "bldgseg" / "models" / "weights" / f"{name}.json").read_text())
        return card["metrics"]["leave_one_city_out"]["cities"]

    dense, default = unseen("aerial-buildings-dense"), unseen("aerial-buildings")
    assert sorted(dense) == sorted(default) and len(dense) == 5
    assert (round(dense["Kampala"]["polygon_f1"], 3), round(default["Kampala"]["polygon_f1"], 3)) == (
        float(f1_dense), float(f1_default))  # fmt: skip
    assert (round(dense["Kampala"]["pixel_iou"], 3), round(default["Kampala"]["pixel_iou"], 3)) == (
        float(iou_dense), float(iou_default))  # fmt: skip
    assert round(100 * dense["Kampala"]["fragment_share"], 1) == float(fragments)
    for key, stated_pair in (("polygon_f1", mean_f1), ("pixel_iou", mean_iou)):
        means = [round(sum(c[city][key] for city in c) / 5, 3) for c in (dense, default)]
        assert means == [float(v) for v in stated_pair]


def test_bundled_checkpoints_are_fp16():
    from safetensors import safe_open

    stated(r"A checkpoint is an (fp16) `\.safetensors` file")
    for path in sorted((REPO / "bldgseg" / "models" / "weights").glob("*.safetensors")):
        with safe_open(path, "pt") as weights:
            dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}  # noqa: SIM118
        assert dtypes <= {"F16", "I64"}, (path.name, dtypes)


def test_area_tolerance_and_worker_deaths():
    import dask
    import distributed  # noqa: F401  (loads its configuration defaults)

    from bldgseg.executors import LOST_WORKER_TIMEOUT
    from tests.test_area_end_to_end import AREA_TOLERANCE

    (area,) = stated(r"`area_m2` is within ([\d.]+) % of the geodesic area")
    assert float(area) / 100 == AREA_TOLERANCE
    deaths, retries = stated(r"A unit that kills its worker (\w+) times \(its first try and Dask's (\d) retries")
    assert int(retries) == dask.config.get("distributed.scheduler.allowed-failures")
    assert deaths == {3: "three", 4: "four", 5: "five"}[1 + int(retries)]
    (wait,) = stated(r"A cluster `bldgseg` starts waits up to (\d+ minutes) for a dead worker")
    assert wait == LOST_WORKER_TIMEOUT
