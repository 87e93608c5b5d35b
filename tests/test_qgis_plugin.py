"""The QGIS plugin (qgis_plugin/bldgseg_processing): its ZIP, its runner (here, without QGIS), and the provider
in real headless QGIS through tests/qgis_plugin_check.py (skipped where /usr/bin/python3 has no PyQGIS)."""

import ast
import configparser
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, SAMPLE

PLUGIN = REPO / "qgis_plugin" / "bldgseg_processing"
SYSTEM_PYTHON = Path("/usr/bin/python3")
TILE = SAMPLE / "images" / "zanzibar_OAM-319297-270996-19.tif"


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


runner = load_module("bldgseg_plugin_runner", PLUGIN / "runner.py")
build = load_module("build_qgis_plugin", REPO / "scripts" / "build_qgis_plugin.py")


# -------------------- the ZIP and the plugin's sources


def test_plugin_zip_has_one_top_folder_with_metadata_and_entry_point(tmp_path):
    path = build.build_zip(tmp_path / "plugin.zip")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        metadata_text = archive.read("bldgseg_processing/metadata.txt").decode()
    assert {name.split("/")[0] for name in names} == {"bldgseg_processing"}
    assert "bldgseg_processing/__init__.py" in names and "bldgseg_processing/metadata.txt" in names
    assert "bldgseg_processing/algorithms/extract.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    metadata = configparser.ConfigParser()
    metadata.read_string(metadata_text)
    general = metadata["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository"):
        assert general.get(key), key
    assert general["hasProcessingProvider"] == "yes"


def test_plugin_calls_the_executable_and_never_imports_bldgseg():
    for path in PLUGIN.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] == "bldgseg"], f"{path.name} imports bldgseg"


# -------------------- the runner, without QGIS


def test_executable_command_from_the_setting(tmp_path):
    spaced = tmp_path / "my tools" / "bldgseg"
    spaced.parent.mkdir()
    spaced.write_text("")
    assert runner.executable_command(str(spaced)) == [str(spaced)]
    assert runner.executable_command("/opt/env/bin/python -m bldgseg") == ["/opt/env/bin/python", "-m", "bldgseg"]
    assert runner.executable_command("  ") == ["bldgseg"]


def test_progress_lines_and_error_messages():
    assert runner.parse_progress('{"event": "progress", "stage": "chunks", "done": 2, "total": 5}') == (
        "chunks",
        2,
        5,
    )
    assert runner.parse_progress("wrote out.gpkg: 7 buildings") is None
    assert runner.parse_progress('{"event": "other"}') is None
    assert runner.error_message(["chunks 1/1", "error: a.tif: no CRS; assign one"], 2) == "a.tif: no CRS; assign one"
    usage = ["Usage: bldgseg run [OPTIONS]", "╭─ Error ─────╮", "│ No such option: --bogus │", "╰─────────────╯"]
    assert runner.error_message(usage, 2) == "No such option: --bogus"
    assert runner.error_message(["Traceback …", "MemoryError"], 1) == "MemoryError (exit status 1)"
    assert runner.error_message([], 9) == "bldgseg stopped with exit status 9"


def fake_bldgseg(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "fake_bldgseg.py"
    script.write_text("import json, sys, time\n" + textwrap.dedent(body))
    return [sys.executable, str(script)]


def run_collecting(command: list[str], arguments: list[str]) -> tuple[list[tuple], list[str]]:
    """Run through the runner; the progress events and output lines it passed on."""
    progress, lines = [], []
    runner.run_bldgseg(command, arguments, lambda *event: progress.append(event), lines.append, lambda: False)
    return progress, lines


def test_runner_streams_progress_and_output(tmp_path):
    command = fake_bldgseg(
        tmp_path,
        """
        for done in range(3):
            print(json.dumps({"event": "progress", "stage": "chunks", "done": done, "total": 2}), file=sys.stderr)
        print("wrote", sys.argv[1:])
        """,
    )
    progress, lines = run_collecting(command, ["run", "x.tif"])
    assert progress == [("chunks", 0, 2), ("chunks", 1, 2), ("chunks", 2, 2)]
    assert lines == ["wrote ['run', 'x.tif']"]


def test_runner_failure_is_the_one_line_error(tmp_path):
    command = fake_bldgseg(
        tmp_path,
        """
        print("skipped: b.tif: not a raster", file=sys.stderr)
        print("error: a.tif: expected 3 or more bands (RGB), found 1; use --bands to choose them", file=sys.stderr)
        sys.exit(2)
        """,
    )
    with pytest.raises(runner.BldgsegFailed) as failure:
        run_collecting(command, [])
    assert str(failure.value) == "a.tif: expected 3 or more bands (RGB), found 1; use --bands to choose them"
    assert failure.value.returncode == 2
    with pytest.raises(runner.BldgsegFailed, match="cannot start.*Processing"):
        run_collecting([str(tmp_path / "missing")], [])


def test_cancel_stops_the_process_and_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    command = fake_bldgseg(
        tmp_path,
        f"""
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print(json.dumps({{"event": "progress", "stage": "chunks", "done": 0, "total": 9}}), file=sys.stderr)
        sys.stderr.flush()
        time.sleep(60)
        """,
    )
    progress = []
    start = time.monotonic()
    with pytest.raises(runner.BldgsegCancelled):
        runner.run_bldgseg(command, [], lambda *p: progress.append(p), lambda line: None, lambda: bool(progress))
    assert time.monotonic() - start < 20
    child = int(pid_file.read_text())
    for _ in range(50):
        if not process_alive(child):
            break
        time.sleep(0.1)
    assert not process_alive(child), "the worker child of bldgseg outlived the cancel"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")  # a zombie is dead


def venv_bldgseg() -> list[str]:
    """This checkout's bldgseg under the test's Python (the runner drops PYTHONPATH, so it is given by ``env``)."""
    return ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "bldgseg"]


def test_child_environment_leaves_qgis_python_and_gdal_settings_behind(monkeypatch):
    monkeypatch.setenv("PYTHONHOME", "/qgis/apps/Python39")
    monkeypatch.setenv("PROJ_LIB", "/qgis/share/proj")
    monkeypatch.setenv("FORCE_COLOR", "1")
    env = runner.child_environment()
    assert not {"PYTHONHOME", "PROJ_LIB", "FORCE_COLOR"} & set(env)
    assert env["BLDGSEG_PROGRESS"] == "json" and env["NO_COLOR"] == "1" and env["PATH"] == os.environ["PATH"]


def test_runner_on_the_real_cli(tmp_path):
    """The progress and error lines the runner reads are the ones bldgseg prints."""
    command = venv_bldgseg()
    out = tmp_path / "out.gpkg"
    progress, lines = run_collecting(command, ["run", str(TILE), "-o", str(out)])
    assert out.exists() and progress and progress[-1][1] == progress[-1][2]
    assert any(line.startswith("wrote") for line in lines)
    with pytest.raises(runner.BldgsegFailed, match=r"nope\.tif: no such file or folder; check the path$"):
        run_collecting(command, ["info", str(tmp_path / "nope.tif")])


# -------------------- real headless QGIS


def system_qgis() -> str | None:
    """Why PyQGIS cannot be used here, or None when /usr/bin/python3 imports qgis.core."""
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import qgis.core"],
        capture_output=True,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": ""},
        timeout=120,
    )
    if probe.returncode != 0:
        return f"{SYSTEM_PYTHON} cannot import qgis.core (apt-get install python3-qgis qgis-providers)"
    return None


@pytest.fixture(scope="module")
def qgis_python() -> str:
    reason = system_qgis()
    if reason:
        pytest.skip(reason)
    return str(SYSTEM_PYTHON)


def test_provider_in_headless_qgis(qgis_python, tmp_path):
    """Registers the provider from the repository folder, runs Extract buildings (and Measure attributes) through
    ``processing`` with the venv's bldgseg, loads the outputs as QGIS does, and renders them over the tile."""
    png = tmp_path / "extract.png"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # QGIS's own Python
    env["QT_QPA_PLATFORM"] = "offscreen"
    proc = subprocess.run(
        [
            qgis_python,
            str(REPO / "tests" / "qgis_plugin_check.py"),
            "--plugin-dir",
            str(PLUGIN.parent),
            "--bldgseg",
            shlex.join(venv_bldgseg()),
            "--image",
            str(TILE),
            "--footprints",
            str(SAMPLE / "labels" / "zanzibar_buildings.geojson"),
            "--work",
            str(tmp_path),
            "--png",
            str(png),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    extract = found["extract"]
    assert extract["valid"] and extract["features"] > 0
    assert extract["renderer"] == "graduatedSymbol" and extract["attribute"] == "confidence"
    assert extract["ranges"] == 5 and extract["alias_area_m2"] == "Area (m²)"
    assert found["probability"]["renderer"] == "singlebandpseudocolor"
    assert found["measure"]["valid"] and found["measure"]["renderer"] == "singleSymbol"
    assert found["measure"]["features"] > 0
    assert found["failure"].startswith("bldgseg run: ") and "\n" not in found["failure"]
    assert found["render"]["style_pixels"] > 0 and png.exists()


def test_readme_names_the_zip_the_script_builds(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"`dist/{PLUGIN.name}-{build.plugin_version()}.zip`" in readme
    assert "BLDGSEG_EXECUTABLE" in (PLUGIN / "settings.py").read_text() and "Providers > bldgseg" in readme
