"""Aligned text tables, the way `captionkit cells`, `encoders` and `compare` print them."""
import click

from captionkit.cli.terminal import quoted


def echo_table(header, rows):
    """Print ``header`` and ``rows`` (sequences of values) as left-aligned columns two spaces apart, every value
    through :func:`captionkit.cli.terminal.quoted` (run values and plugin names come from files)."""
    cells = [[quoted(value) for value in row] for row in [header, *rows]]
    widths = [max(len(row[k]) for row in cells) for k in range(len(header))]
    for row in cells:
        click.echo("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())
