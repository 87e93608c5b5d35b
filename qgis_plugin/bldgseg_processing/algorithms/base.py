"""What every bldgseg algorithm shares: running the configured executable with progress, cancel and errors."""

from __future__ import annotations

import shlex

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
)

from ..runner import BldgsegCancelled, BldgsegFailed, run_bldgseg
from ..settings import bldgseg_command


class BldgsegAlgorithm(QgsProcessingAlgorithm):
    """One bldgseg command: subclasses define the parameters and turn them into command-line arguments."""

    #: The bldgseg command this algorithm runs (``run``, ``attributes``…).
    command = ""
    algorithm_name = ""
    title = ""
    help_text = ""

    def name(self) -> str:
        return self.algorithm_name

    def displayName(self) -> str:  # noqa: N802 (QGIS's name)
        return self.title

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS's name)
        return (
            f"{self.help_text}<br><br>Runs <code>bldgseg {self.command}</code> with the executable set in "
            "Settings &gt; Options &gt; Processing &gt; Providers &gt; bldgseg."
        )

    def createInstance(self):  # noqa: N802 (QGIS's name)
        return type(self)()

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS's name)
        feedback = feedback or QgsProcessingFeedback()
        arguments, results = self.arguments(parameters, context, feedback)
        self.run_command(arguments, feedback)
        return self.finish(results, parameters, context, feedback)

    def arguments(self, parameters, context, feedback) -> tuple[list[str], dict]:
        """The command's arguments and the results to return (output paths)."""
        raise NotImplementedError

    def finish(self, results: dict, parameters, context, feedback) -> dict:
        """After a successful run: arrange loading of the outputs; returns the results."""
        return results

    def run_command(self, arguments: list[str], feedback: QgsProcessingFeedback) -> None:
        """Run ``bldgseg <command> <arguments>``: output to the log, progress to the bar, cancel stops it, and
        a failure becomes a ``QgsProcessingException`` with bldgseg's one-line message."""
        command, arguments = bldgseg_command(), [self.command, *arguments]
        feedback.pushCommandInfo(" ".join(shlex.quote(a) for a in [*command, *arguments]))

        def progress(stage: str, done: int, total: int) -> None:
            feedback.setProgressText(f"{stage}: {done} of {total}")
            if total > 0:
                feedback.setProgress(100.0 * done / total)

        try:
            run_bldgseg(command, arguments, progress, feedback.pushConsoleInfo, feedback.isCanceled)
        except BldgsegCancelled as exc:
            raise QgsProcessingException(str(exc)) from None
        except BldgsegFailed as exc:
            raise QgsProcessingException(f"bldgseg {self.command}: {exc}") from None


def advanced(parameter: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    """The parameter, shown under "Advanced parameters"."""
    parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return parameter


def given(parameters: dict, name: str) -> bool:
    """Whether an optional parameter has a value."""
    return parameters.get(name) not in (None, "")
