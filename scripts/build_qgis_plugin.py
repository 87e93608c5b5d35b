"""Zip the QGIS plugin (qgis_plugin/bldgseg_processing) for QGIS's "Install from ZIP".

    python scripts/build_qgis_plugin.py            # -> dist/bldgseg_processing-<version>.zip
    python scripts/build_qgis_plugin.py -o out.zip

The ZIP holds one top-level folder, the plugin's own name, as QGIS expects; caches are left out.
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "qgis_plugin" / "bldgseg_processing"
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIPPED_SUFFIXES = {".pyc", ".pyo"}


def plugin_version(plugin: Path = PLUGIN) -> str:
    """``version`` from the plugin's metadata.txt."""
    metadata = configparser.ConfigParser()
    metadata.read(plugin / "metadata.txt", encoding="utf-8")
    return metadata["general"]["version"]


def plugin_files(plugin: Path = PLUGIN) -> list[Path]:
    """The files that go into the ZIP, sorted."""
    return sorted(
        path
        for path in plugin.rglob("*")
        if path.is_file()
        and not SKIPPED_PARTS.intersection(path.relative_to(plugin).parts)
        and path.suffix not in SKIPPED_SUFFIXES
    )


def build_zip(output: Path | None = None, plugin: Path = PLUGIN) -> Path:
    """Write the installable ZIP (default ``dist/<plugin>-<version>.zip``) and return its path."""
    output = output or REPO / "dist" / f"{plugin.name}-{plugin_version(plugin)}.zip"
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in plugin_files(plugin):
            archive.write(path, f"{plugin.name}/{path.relative_to(plugin).as_posix()}")
    tmp.replace(output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, help="ZIP to write (default: dist/<plugin>-<version>.zip)")
    args = parser.parse_args(argv)
    path = build_zip(args.output)
    print(f"wrote {path} ({len(plugin_files())} files); install it in QGIS: Plugins > Manage and Install "
          "Plugins > Install from ZIP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
