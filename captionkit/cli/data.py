"""`captionkit data ...`: make, check and fetch datasets in the COCO captioning bundle layout."""
from pathlib import Path

import click

from captionkit.fetch import BUNDLES, FetchError, fetch_bundle


@click.group()
def data():
    """Make, inspect and fetch datasets in the COCO captioning bundle layout."""


@data.command("fetch")
@click.argument("name", type=click.Choice(sorted(BUNDLES)))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--url", help="Download from this URL instead (a mirror, or file:///path to a local copy of the archive).")
@click.option("--sha256", help="Expected SHA-256 of the archive (64 hex digits); overrides captionkit's recorded one.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds to wait for the server before giving up.")
def fetch(name, directory, url, sha256, timeout):
    """Download bundle NAME, verify it and unpack it so that DIRECTORY holds its files.

    `coco` is the CS231n COCO captioning bundle (captions, vocabulary, VGG-16 fc7 PCA features, image URLs).
    DIRECTORY must not exist or be empty; it appears only once the bundle is complete.
    """
    click.echo(f"downloading {url or BUNDLES[name].url}")
    progress = _DownloadProgress()
    try:
        result = fetch_bundle(name, directory, url=url, sha256=sha256, progress=progress, timeout=timeout)
    except (FetchError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    finally:
        progress.close()
    click.echo(f"fetched {name} into {result.directory} ({result.size} bytes, SHA-256 {result.sha256})")
    if not result.checksum_verified:
        click.echo(f"warning: captionkit has no recorded SHA-256 for {name!r}, so only the download's size and the "
                   "zip's CRCs were checked, not that it is the genuine archive; pass --sha256 to check it.", err=True)


class _DownloadProgress:
    """Renders fetch_bundle's progress(done, total) calls: a bar when the size is known, else a line per 64 MiB."""

    _STEP = 64 * 1024 * 1024

    def __init__(self):
        self._bar = None
        self._shown = 0

    def __call__(self, done, total):
        if total:
            if self._bar is None:
                self._bar = click.progressbar(length=total, label="downloading")
                self._bar.__enter__()
            self._bar.update(done - self._shown)
        elif done // self._STEP > self._shown // self._STEP:
            click.echo(f"  {done // (1024 * 1024)} MiB downloaded")
        self._shown = done

    def close(self):
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
