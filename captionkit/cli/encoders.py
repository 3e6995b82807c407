"""`captionkit encoders`: which image encoders are installed, what they give, and whether they load."""
import click

from captionkit.cli.table import echo_table
from captionkit.encoders import ENTRY_POINT_GROUP, encoder_info
from captionkit.plugins import DISABLE_AUTOLOAD_ENV, autoload_disabled


@click.command("encoders")
def encoders():
    """List every image encoder: distribution, version, output size and whether it loads.

    An encoder turns picture files into the features a model trains on: `captionkit data import --encoder NAME`
    uses one, and `captionkit caption` uses the one a run was trained with. `shapes` and `onnx` are built in;
    plugins add more through the entry-point group `captionkit.encoders` (plugins/captionkit-torchvision:
    resnet50, vgg16). Listing imports each plugin once; CAPTIONKIT_DISABLE_PLUGIN_AUTOLOAD=1 ignores plugins.

    `onnx:PATH` is recorded with PATH resolved to an absolute path, so that `captionkit caption` finds the model from
    any working directory; the model's file and its external-data files are identified by their SHA-256.
    """
    infos = encoder_info()
    header = ("encoder", "distribution", "version", "output", "loads", "what it is")
    rows = []
    for info in infos:
        encoder = info.loaded
        if encoder is None:
            output, summary = "-", "-"
        else:
            output = str(encoder.output_dim) if encoder.output_dim is not None else "the model's"
            usage = f"{info.name}:{encoder.argument}" if encoder.argument else info.name
            summary = f"{usage}: {encoder.summary}"
        rows.append((info.name, info.distribution, info.version, output, "yes" if info.loads else "NO", summary))
    echo_table(header, rows)
    for info in infos:
        if not info.loads:
            click.echo(f"\n{info.name}: {info.error}")
    if autoload_disabled():
        click.echo(f"\nplugins (entry-point group {ENTRY_POINT_GROUP}) are ignored: {DISABLE_AUTOLOAD_ENV} is set")
