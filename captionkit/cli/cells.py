"""`captionkit cells` and `captionkit gradcheck`: which recurrent cells are installed, and do they conform."""
import click

from captionkit.cells import available_cells, cell_info
from captionkit.cells.registry import ENTRY_POINT_GROUP
from captionkit.cli.table import echo_table
from captionkit.plugins import DISABLE_AUTOLOAD_ENV, autoload_disabled
from captionkit.testing import run_checks


@click.command("cells")
def cells():
    """List every recurrent cell: distribution, version, origin (built in / entry point) and whether it loads.

    Listing imports each plugin once to see whether it loads. Plugins come from the entry-point group
    `captionkit.cells`; CAPTIONKIT_DISABLE_PLUGIN_AUTOLOAD=1 ignores them.
    """
    infos = cell_info()
    header = ("cell", "distribution", "version", "origin", "loads")
    echo_table(header, [(i.name, i.distribution, i.version, i.origin, "yes" if i.loads else "NO") for i in infos])
    for info in infos:
        if not info.loads:
            click.echo(f"\n{info.name}: {info.error}")
    if autoload_disabled():
        click.echo(f"\nplugins (entry-point group {ENTRY_POINT_GROUP}) are ignored: {DISABLE_AUTOLOAD_ENV} is set")


@click.command("gradcheck")
@click.option("--cell", "cell_types", multiple=True, metavar="NAME",
              help="Cell to check (repeatable). Default: every registered cell.")
@click.option("--backend", type=click.Choice(["all", "numpy", "cython"]), default="all", show_default=True,
              help="Which path of the cell to check; `all` is numpy, plus cython for cells with a compiled path.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs and parameters.")
def gradcheck(cell_types, backend, seed):
    """Run the conformance checks of captionkit.testing on cells and print one line per check.

    Numerical gradients of the sequence forward/backward and of the full model loss (float64), the decoding step
    against the sequence forward, float32 against float64, the compiled path against numpy, and errors for wrong
    shapes. Exits with status 1 when any check fails.
    """
    names = cell_types or tuple(available_cells())
    backends = None if backend == "all" else (backend,)
    failed = []
    for i, name in enumerate(names):
        try:
            report = run_checks(name, backends=backends, seed=seed)
        except ValueError as exc:  # a backend the cell does not have
            raise click.BadParameter(str(exc), param_hint="--backend") from exc
        if i:
            click.echo()
        click.echo(report.format())
        if not report.ok:
            failed.append(name)
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(names)} cells fail conformance checks: {', '.join(failed)}")
