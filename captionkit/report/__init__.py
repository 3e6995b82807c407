"""Results people look at: a self-contained HTML page of a split's pictures with each run's captions and scores
(``captionkit report``), or of one's own pictures with their captions (``captionkit caption --html``).

One concept a module: :mod:`~captionkit.report.scores` (per-picture CIDEr-D and BLEU-4),
:mod:`~captionkit.report.gallery` (the rows: runs aligned by picture), :mod:`~captionkit.report.pictures` (the
thumbnails inside the folder), :mod:`~captionkit.report.header` (each run's account and plots),
:mod:`~captionkit.report.page` (all of the HTML) and :mod:`~captionkit.report.build` (the folder, written).
"""
from captionkit.report.build import attends, check_folder, write_picture_gallery, write_report

__all__ = ["attends", "check_folder", "write_picture_gallery", "write_report"]
