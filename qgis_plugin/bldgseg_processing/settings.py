"""The plugin's Processing setting: how to start bldgseg (Settings > Options > Processing > Providers > bldgseg)."""

from __future__ import annotations

from processing.core.ProcessingConfig import ProcessingConfig, Setting

from .runner import executable_command

#: Group of the setting in the Processing options (the provider's name).
GROUP = "bldgseg"
#: Setting key: the bldgseg executable, or a command such as ``/opt/bldgseg/bin/python -m bldgseg``.
EXECUTABLE = "BLDGSEG_EXECUTABLE"
DEFAULT_EXECUTABLE = "bldgseg"


def register_settings() -> None:
    """Show the setting under the provider in the Processing options (kept across sessions by QGIS)."""
    ProcessingConfig.addSetting(
        Setting(
            GROUP,
            EXECUTABLE,
            "bldgseg executable (path, or a command such as /path/to/python -m bldgseg)",
            DEFAULT_EXECUTABLE,
        )
    )
    ProcessingConfig.readSettings()


def unregister_settings() -> None:
    ProcessingConfig.removeSetting(EXECUTABLE)


def bldgseg_command() -> list[str]:
    """The command line that starts bldgseg, as configured (``bldgseg`` on the PATH by default)."""
    return executable_command(ProcessingConfig.getSetting(EXECUTABLE) or DEFAULT_EXECUTABLE)
