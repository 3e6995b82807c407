"""Captioning bundles: their file names (:mod:`~captionkit.bundle.layout`), reading and checking them
(:mod:`~captionkit.bundle.reader`) and writing them (:mod:`~captionkit.bundle.writer`).

The assignment's names stay in :mod:`captionkit.data`, a thin module over the reader.
"""
