"""Writing a results folder: the runs' header, the gallery's data and pictures, and the page, into one directory.

:func:`write_report` shows a split of the dataset the runs were trained on (``captionkit report``);
:func:`write_picture_gallery` shows the captions ``captionkit caption`` gave one's own pictures. A folder is written
only when it is new, empty, or an earlier report's (its ``index.html`` says so), so a report never overwrites
other files.
"""
from pathlib import Path

from captionkit.checkpoint_schema import read_checkpoint
from captionkit.comparison import read_run, read_runs
from captionkit.data import bundle_dir, load_coco_data
from captionkit.evaluation import DEFAULT_BATCH_SIZE
from captionkit.images import MAX_PICTURE_PIXELS
from captionkit.loading import describe_checkpoint, load_model
from captionkit.report.gallery import Caption, Picture, split_gallery, worst_first
from captionkit.report.header import run_headers
from captionkit.report.page import GENERATOR, render_page
from captionkit.report.pictures import file_pictures, split_pictures
from captionkit.runs import resolve_checkpoint
from captionkit.safeio import atomic_write_text

__all__ = ["PAGE", "attends", "check_folder", "write_picture_gallery", "write_report"]

PAGE = "index.html"
_GENERATOR_TAG = f'<meta name="generator" content="{GENERATOR}">'.encode()


def check_folder(out):
    """ValueError naming ``out`` unless it is missing, an empty directory, or an earlier report's folder (its
    ``index.html`` is one this module wrote): a report never overwrites other files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: not a directory; give a new or empty folder for the report")
    if out.is_dir() and any(out.iterdir()):
        page = out / PAGE
        earlier = page.is_file() and _GENERATOR_TAG in page.read_bytes()[:1024]
        if not earlier:
            raise ValueError(f"{out}: already holds files that are not a captionkit report; give a new or empty "
                             "folder")


def _prepared(out):
    check_folder(out)
    Path(out).mkdir(parents=True, exist_ok=True)
    return Path(out)


def attends(run, checkpoint=None):
    """Whether the model of ``run``'s checkpoint (``checkpoint`` chooses it as :func:`captionkit.loading.load_model`
    does) reads its pictures through attention, so that a page can show where it looked."""
    return read_checkpoint(resolve_checkpoint(run, checkpoint)).spec.attention is not None


def _dataset(infos, data_dir):
    """The bundle directory and PCA choice the runs were trained on (or ``data_dir``): the same for all of them, so
    that their captions describe the same pictures."""
    if data_dir is not None:
        return Path(data_dir), infos[0]["config"].get("pca", True)
    chosen = {(str(bundle_dir(info["config"].get("data")).resolve()), info["config"].get("pca", True))
              for info in infos}
    if len(chosen) > 1:
        trained = "; ".join(f"{info['run_dir']}: {info['config'].get('data') or 'the built-in dataset'}"
                            for info in infos)
        raise ValueError(f"the runs were trained on different datasets ({trained}); a report shows runs on the "
                         "same pictures: give runs of one dataset, or the dataset to show with --data")
    bundle, pca = chosen.pop()
    return Path(bundle), pca


def _decoding(beam_size):
    return "greedy decoding" if beam_size == 1 else f"beam search of width {beam_size}"


def write_report(runs, out, split="val", max_images=None, beam_size=1, online=False, checkpoint=None,
                 data_dir=None, batch_size=DEFAULT_BATCH_SIZE, progress=None, loaded=None):
    """Write the results page of the run directories ``runs`` into the folder ``out`` -> the page's path.

    Each run's model (its ``checkpoint``: None is its best when it has one; :func:`captionkit.runs.resolve_checkpoint`)
    captions the first ``max_images`` images of ``split`` (all by default) with ``beam_size``; ``loaded(info)`` hears
    which checkpoint each run used. The runs must have been trained on one dataset (or ``data_dir`` names the one to
    show). ``online``: a COCO bundle's pictures are shown from their URLs (else linked). ``progress(stage, done,
    total)`` as :func:`captionkit.evaluation.generate_captions` reports it.
    """
    out = _prepared(out)
    reports = read_runs(runs)
    models, infos = [], []
    for run in runs:
        model, info = load_model(run, checkpoint=checkpoint)
        models.append(model)
        infos.append(info)
        if loaded is not None:
            loaded(info)
    bundle, pca = _dataset(infos, data_dir)
    data = load_coco_data(bundle, pca_features=pca)
    images, pictures, captions = split_gallery(models, data, split, max_images, beam_size, batch_size, progress)
    for picture, file in zip(pictures, split_pictures(bundle, split, images, data.get(f"{split}_urls"), out,
                                                      online)):
        picture.file = file
    headers, comparison = run_headers(reports, [describe_checkpoint(info) for info in infos],
                                      [run.corpus for run in captions], out)
    description = (f"{len(pictures)} {split} images of {bundle}, captioned by {_decoding(beam_size)}, worst first by "
                   f"the CIDEr-D of {reports[0].name}. CIDEr-D uses the document frequencies of these pictures' "
                   "references, so its mean is the corpus CIDEr-D; BLEU-4 is each picture's sentence BLEU-4. Click "
                   "a score's heading to sort by it (lowest first, again for highest)."
                   + (" Click a word of a caption to see where the model looked for it." if
                      any(c.attention is not None for run in captions for c in run.captions) else ""))
    page = out / PAGE
    atomic_write_text(page, render_page(f"captionkit report: {', '.join(r.name for r in reports)}", description,
                                        headers, worst_first(pictures), [r.name for r in reports], scored=True,
                                        comparison=comparison))
    return page


def write_picture_gallery(run, info, results, out, max_pixels=MAX_PICTURE_PIXELS):
    """Write the page of one's own pictures into the folder ``out`` -> its path: ``results`` as
    :func:`captionkit.captioning.caption_images` returns them (with ``words`` and ``attention`` for an attention
    model), made by the checkpoint ``info`` describes of the run directory ``run``. No references, so no scores."""
    out = _prepared(out)
    report = read_run(info["run_dir"] or run)
    pictures = [Picture(entry["image"], [], [Caption(entry["caption"], words=entry.get("words"),
                                                     attention=entry.get("attention"), error=entry.get("error"))],
                        file) for entry, file in zip(results, file_pictures([e["image"] for e in results], out,
                                                                            max_pixels))]
    headers, _ = run_headers([report], [describe_checkpoint(info)], [None], out)
    description = (f"{len(pictures)} pictures captioned by {report.name}, in the order given."
                   + (" Click a word of a caption to see where the model looked for it." if
                      any(p.captions[0].attention is not None for p in pictures) else ""))
    page = out / PAGE
    atomic_write_text(page, render_page(f"captionkit captions: {report.name}", description, headers, pictures,
                                        [report.name], scored=False))
    return page
