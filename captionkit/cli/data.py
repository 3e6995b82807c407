"""`captionkit data ...`: make, check and fetch datasets in the COCO captioning bundle layout."""
import click


@click.group()
def data():
    """Make, inspect and fetch datasets in the COCO captioning bundle layout."""
