"""The ``bldgseg`` Typer app: creates it and registers the commands (one module per command family)."""

from __future__ import annotations

from typing import Annotated

import typer

from bldgseg import __version__
from bldgseg.cli.adapt import adapt_command
from bldgseg.cli.attributes import attributes
from bldgseg.cli.common import reporting_errors
from bldgseg.cli.evaluate import evaluate_command
from bldgseg.cli.info import info, models
from bldgseg.cli.run import predict, run, vectorize
from bldgseg.cli.street import street_command
from bldgseg.cli.train import train_command

app = typer.Typer(
    name="bldgseg",
    help="Building inventories from aerial imagery: segment, vectorize, measure, write GeoPackages.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("train")(train_command)
app.command("adapt")(adapt_command)
app.command("street")(street_command)
# evaluate_command raises project errors (tests call it alone); here they become an exit code and one line.
app.command("evaluate")(reporting_errors(evaluate_command))
app.command("run")(run)
app.command("predict")(predict)
app.command("vectorize")(vectorize)
app.command("attributes")(attributes)
app.command("models")(models)
app.command("info")(info)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bldgseg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Building inventories from aerial imagery."""
