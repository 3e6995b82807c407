"""``captionkit data import``: a captioning bundle from one's own pictures and captions.

Two kinds of caption files are read:

- **Karpathy split files** (``dataset_coco.json``, ``dataset_flickr8k.json``, ``dataset_flickr30k.json``, as
  neuraltalk and most captioning code use them): ``{"images": [{"filename", "filepath" (COCO only), "imgid",
  "split", "sentences": [{"tokens": [...], "raw": "..."}]}]}``. Split ``restval`` is taken as ``train``, as
  neuraltalk2 and the usual Karpathy-split training do;
- **tables**: CSV with a header naming the columns ``image`` and ``caption`` (and optionally ``split``), one row
  per caption; or JSON lines ``{"image": ..., "caption": "..."}`` (or ``"captions": [...]``, and optionally
  ``"split"``). Without splits, a seeded tenth of the pictures (at least one) is held out as ``val``.

Image paths are relative to the images folder (default: the caption file's folder). Captions are lowercased and cut
into words of letters and digits (a Karpathy file's ``tokens`` are used as given, lowercased); the vocabulary is
every word seen at least ``min_count`` times in the training captions (neuraltalk's default 5; rarer words become
``<UNK>``), ordered by frequency; captions longer than ``max_words`` are cut. Features come from an encoder
(:mod:`captionkit.encoders`), optionally reduced by a PCA fitted on the training pictures.

What is refused, with the file and the entry named: an entry without an image name, a split not listed above, two
entries for the same picture or the same ``imgid``, a caption file captionkit cannot parse. What is dropped and
reported: captions with no words, then pictures left without captions; with ``skip_missing``, pictures that are
missing or unreadable (otherwise those are errors).
"""
import collections
import csv
import functools
import io
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captionkit.bundle.layout import ENCODER_FILE, PCA_FILE, REQUIRED_SPLITS, SPLITS
from captionkit.bundle.writer import BundleFiles, encode_captions
from captionkit.checks import integer
from captionkit.encoders.pipeline import Pca, encode_files
from captionkit.encoders.record import EncoderRecord
from captionkit.images import MAX_PICTURE_PIXELS
from captionkit.safeio import check_new_directory, parse_json, read_bounded, read_head, read_lines, staged_directory
from captionkit.vocabulary import SPECIAL_TOKENS, Vocabulary

__all__ = ["IMPORT_REPORT", "CaptionFileError", "ImportReport", "Picture", "build_vocabulary", "import_dataset",
           "read_captions_file", "tokenize"]

IMPORT_REPORT = "import.json"
DEFAULT_MIN_COUNT = 5
DEFAULT_MAX_WORDS = 16
_SPLIT_ALIASES = {"train": "train", "val": "val", "test": "test", "restval": "train"}
_HELD_OUT = 0.1  # share of the pictures held out as val when the caption file gives no splits
MAX_SPLIT_FILE_BYTES = 2**29  # a Karpathy split file; COCO's, the largest in use, is about 150 MB
MAX_TABLE_BYTES = 2**29  # a caption table: COCO's 600000 captions as CSV are about 40 MB
_MAX_TABLE_LINE = 2**20
_SNIFF_BYTES = 4096


class CaptionFileError(ValueError):
    """A caption file cannot be imported: the message names the file and the entry at fault."""


@dataclass
class Picture:
    """One picture of a caption file: where it is, its split, its captions (word lists), where it was listed."""

    path: Path
    split: str
    captions: list
    source: str  # e.g. "images[12]" or "line 5", for messages
    key: object = None  # the file's id for the picture (imgid), if any
    name: str = ""  # the picture's name as the caption file gives it, relative to the images folder


@dataclass
class ImportReport:
    """What :func:`import_dataset` did: counts per split, the vocabulary, and everything it dropped."""

    directory: Path
    source: str
    encoder: str
    feature_dim: int
    pca_dim: int | None
    vocabulary_size: int
    min_count: int
    max_words: int
    images: dict = field(default_factory=dict)  # split -> number of pictures
    captions: dict = field(default_factory=dict)  # split -> number of captions
    unknown_words: int = 0  # word occurrences turned into <UNK>
    cut_captions: int = 0  # captions longer than max_words
    dropped: list = field(default_factory=list)  # one sentence per dropped caption or picture
    regions: int | None = None  # L for features on a grid of L image regions

    def to_dict(self):
        return {"directory": str(self.directory), "source": self.source, "encoder": self.encoder,
                "feature_dim": self.feature_dim, "pca_dim": self.pca_dim, "vocabulary_size": self.vocabulary_size,
                "min_count": self.min_count, "max_words": self.max_words, "images": self.images,
                "captions": self.captions, "unknown_words": self.unknown_words, "cut_captions": self.cut_captions,
                "dropped": self.dropped, **({} if self.regions is None else {"regions": self.regions})}


@functools.cache
def _word_pattern():
    """A word: a letter or digit, then letters, digits and the marks and joiners that are part of a word.

    ``\\w`` alone leaves out combining marks (categories Mn, Mc, Me): the vowel signs and viramas of Devanagari,
    Thai, Bengali and Tamil, Arabic's harakat, and the accents of decomposed Latin, so words of those scripts would
    be cut into letters. The zero-width joiner and non-joiner stay inside a word too (Persian, Indic conjuncts).
    Built once, from the Unicode database Python ships.
    """
    marks = [chr(code) for code in range(0x110000) if unicodedata.category(chr(code)) in ("Mn", "Mc", "Me")]
    inner = re.escape("".join(marks) + "\u200c\u200d")
    part = rf"[^\W_](?:[^\W_]|[{inner}])*"
    return re.compile(rf"{part}(?:'{part})*")  # inner apostrophes kept: don't, o'clock


def tokenize(text):
    """Lowercased words of letters and digits (any script, with their combining marks), keeping inner
    apostrophes; punctuation dropped. Text is NFC-normalised first, so decomposed text (as macOS writes file
    names and some editors text) gives the same words as composed text."""
    return _word_pattern().findall(unicodedata.normalize("NFC", str(text)).lower())


# ---------------------------------------------------------------------------------------------- reading
def _karpathy_caption(path, where, sentence):
    if not isinstance(sentence, dict):
        raise CaptionFileError(f"{path}: {where} is {type(sentence).__name__}, expected an object with 'tokens' or "
                               "'raw'")
    tokens = sentence.get("tokens")
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        return [word for token in tokens for word in [unicodedata.normalize("NFC", token).strip().lower()] if word]
    if isinstance(sentence.get("raw"), str):
        return tokenize(sentence["raw"])
    raise CaptionFileError(f"{path}: {where} has neither 'tokens' (a list of words) nor 'raw' (text)")


def _split_of(path, where, value):
    if value not in _SPLIT_ALIASES:
        raise CaptionFileError(f"{path}: {where} has split {value!r}; known splits: train, val, test, and restval "
                           "(taken as train)")
    return _SPLIT_ALIASES[value]


def _looks_like_json_object(path):
    """Whether the file starts, after a byte-order mark and white space, with the ``{`` of a JSON object: a
    picture or an archive given as a split file is refused from its first bytes rather than read whole."""
    head = read_head(path, _SNIFF_BYTES, "caption file", CaptionFileError)
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    return text.startswith(b"{")


def _read_karpathy(path, images_dir):
    if not _looks_like_json_object(path):
        raise CaptionFileError(f"{path}: expected a Karpathy split file: an object with an 'images' list (this file "
                               "does not start with '{')")
    raw = read_bounded(path, MAX_SPLIT_FILE_BYTES, "caption file", CaptionFileError)
    document = parse_json(raw.removeprefix(b"\xef\xbb\xbf"), path, "file", CaptionFileError)
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise CaptionFileError(f"{path}: expected a Karpathy split file: an object with an 'images' list")
    pictures = []
    for k, entry in enumerate(document["images"]):
        where = f"images[{k}]"
        if not isinstance(entry, dict):
            raise CaptionFileError(f"{path}: {where} is {type(entry).__name__}, expected an object")
        filename = entry.get("filename")
        if not isinstance(filename, str) or not filename:
            raise CaptionFileError(f"{path}: {where} has no 'filename'")
        where = f"images[{k}] ({filename})"
        folder = entry.get("filepath") or ""
        if not isinstance(folder, str):
            raise CaptionFileError(f"{path}: {where} has a 'filepath' that is not text: {folder!r}")
        sentences = entry.get("sentences")
        if not isinstance(sentences, list):
            raise CaptionFileError(f"{path}: {where} has no 'sentences' list")
        captions = [_karpathy_caption(path, f"{where} sentences[{j}]", s) for j, s in enumerate(sentences)]
        split = _split_of(path, where, entry.get("split"))
        name = Path(folder) / filename
        pictures.append(Picture(Path(images_dir) / name, split, captions, where, entry.get("imgid"), str(name)))
    return pictures


def _table_rows(path):
    """(where, row dict) of a CSV (header row) or JSON-lines caption table."""
    text_path = Path(path)
    try:
        if text_path.suffix.lower() == ".csv":
            text = read_bounded(text_path, MAX_TABLE_BYTES, "caption table", CaptionFileError).decode("utf-8-sig")
            reader = csv.DictReader(io.StringIO(text, newline=""))
            columns = set(reader.fieldnames or [])
            if not {"image", "caption"} <= columns:
                raise CaptionFileError(f"{path}: the header row must name the columns image and caption (and "
                                       f"optionally split); it names {sorted(columns)}")
            return [(f"line {reader.line_num}", row) for row in reader]
        rows = []
        for number, line in read_lines(text_path, MAX_TABLE_BYTES, _MAX_TABLE_LINE, "caption table",
                                       CaptionFileError):
            if line is None:
                raise CaptionFileError(f"{path}: line {number} is longer than {_MAX_TABLE_LINE} bytes; a row holds a "
                                       "picture's name and captions")
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except json.JSONDecodeError as exc:
                raise CaptionFileError(f"{path}: line {number} is not JSON ({exc})") from None
            except RecursionError:
                raise CaptionFileError(f"{path}: line {number} is not a readable JSON object (nested too "
                                       "deeply)") from None
            if not isinstance(row, dict):
                raise CaptionFileError(f"{path}: line {number} is {type(row).__name__}, expected an object")
            rows.append((f"line {number}", row))
        return rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CaptionFileError(f"{path}: cannot read caption table ({exc})") from None


def _read_table(path, images_dir, seed):
    pictures, by_name = [], {}
    for where, row in _table_rows(path):
        image = row.get("image")
        if not isinstance(image, str) or not image.strip():
            raise CaptionFileError(f"{path}: {where} has no image")
        if "captions" in row and isinstance(row["captions"], list):
            texts = row["captions"]
        else:
            texts = [row.get("caption")]
        if not all(isinstance(t, str) for t in texts):
            raise CaptionFileError(f"{path}: {where} ({image}) has a caption that is not text")
        split = row.get("split") or None
        split = _split_of(path, f"{where} ({image})", split) if split is not None else None
        picture = by_name.get(image)
        if picture is None:
            picture = by_name[image] = Picture(Path(images_dir) / image, split, [], f"{where} ({image})", name=image)
            pictures.append(picture)
        elif picture.split != split:
            raise CaptionFileError(f"{path}: {where} puts {image} in split {split}, but {picture.source} put it in "
                               f"{picture.split}")
        picture.captions.extend(tokenize(text) for text in texts)
    unsplit = [p for p in pictures if p.split is None]
    if unsplit and len(unsplit) != len(pictures):
        raise CaptionFileError(f"{path}: {unsplit[0].source} has no split, but other rows have one; give every row a "
                           "split or none")
    if unsplit:
        count = max(1, round(_HELD_OUT * len(pictures)))
        held_out = set(np.random.RandomState(seed).permutation(len(pictures))[:count])
        for k, picture in enumerate(pictures):
            picture.split = "val" if k in held_out else "train"
    return pictures


def read_captions_file(path, images_dir=None, seed=0, allow_outside_images=False):
    """The pictures of a Karpathy split file (``.json``) or caption table (``.csv``, ``.jsonl``) -> [Picture].

    ``images_dir``: the folder image names are relative to (default: the caption file's folder). ``seed``: the
    held-out split of a table without splits. A name that is absolute or leads out of ``images_dir`` (``..``, a
    symbolic link pointing elsewhere) is refused unless ``allow_outside_images``: a downloaded caption file must not
    pull arbitrary readable pictures into a bundle that may be shared. Raises :class:`CaptionFileError` naming the
    file and entry.
    """
    path = Path(path)
    if not path.is_file():
        raise CaptionFileError(f"{path}: file not found")
    images_dir = path.parent if images_dir is None else Path(images_dir)
    suffix = path.suffix.lower()
    if suffix == ".json":
        pictures = _read_karpathy(path, images_dir)
    elif suffix in (".csv", ".jsonl"):
        pictures = _read_table(path, images_dir, seed)
    else:
        raise CaptionFileError(f"{path}: caption files are Karpathy split files (.json) or tables (.csv, .jsonl); got "
                           f"{suffix or 'no suffix'!r}")
    if not allow_outside_images:
        _refuse_outside(path, pictures, images_dir)
    _refuse_duplicates(path, pictures)
    return pictures


def _refuse_outside(path, pictures, images_dir):
    folder = images_dir.resolve()
    for picture in pictures:
        if Path(picture.name).is_absolute():
            problem = "is an absolute path"
        elif not picture.path.resolve().is_relative_to(folder):
            problem = f"leads outside the images folder {images_dir} (to {picture.path.resolve()})"
        else:
            continue
        raise CaptionFileError(f"{path}: {picture.source}: the picture name {picture.name!r} {problem}; names are "
                               "relative to the images folder (--images). Pass --allow-outside-images to import "
                               "pictures from elsewhere")


def _refuse_duplicates(path, pictures):
    seen_paths, seen_keys = {}, {}
    for picture in pictures:
        resolved = picture.path.resolve()
        if resolved in seen_paths:
            raise CaptionFileError(f"{path}: {seen_paths[resolved].source} and {picture.source} are the same picture "
                               f"{picture.path}; list each picture once with all its captions")
        seen_paths[resolved] = picture
        if picture.key is not None:
            if picture.key in seen_keys:
                raise CaptionFileError(f"{path}: {seen_keys[picture.key].source} and {picture.source} share imgid "
                                   f"{picture.key!r}")
            seen_keys[picture.key] = picture


# ---------------------------------------------------------------------------------------------- writing
def _drop_empty(pictures, dropped):
    kept = []
    for picture in pictures:
        empty = sum(1 for caption in picture.captions if not caption)
        if empty:
            dropped.append(f"{picture.source}: {empty} caption(s) with no words dropped")
            picture.captions = [caption for caption in picture.captions if caption]
        if picture.captions:
            kept.append(picture)
        else:
            dropped.append(f"{picture.source}: no captions left; picture dropped")
    return kept


def _drop_missing(pictures, skip_missing, dropped):
    missing = [p for p in pictures if not p.path.is_file()]
    if missing and not skip_missing:
        listed = "; ".join(f"{p.path} ({p.source})" for p in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CaptionFileError(f"{len(missing)} pictures not found: {listed}{more}. Check --images, or pass "
                           "--skip-missing to import without them")
    dropped.extend(f"{p.source}: {p.path} not found; picture dropped" for p in missing)
    missing_ids = {id(p) for p in missing}
    return [p for p in pictures if id(p) not in missing_ids]


def build_vocabulary(pictures, min_count):
    """idx_to_word: the special tokens, then every word seen ``min_count`` times or more in the pictures'
    captions, most frequent first (ties alphabetical)."""
    counts = collections.Counter(word for p in pictures for caption in p.captions for word in caption)
    words = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIAL_TOKENS),
                   key=lambda w: (-counts[w], w))
    return Vocabulary.with_words(words).idx_to_word


def import_dataset(out, captions_file, encoder, images_dir=None, min_count=DEFAULT_MIN_COUNT,
                   max_words=DEFAULT_MAX_WORDS, pca_dim=None, skip_missing=False, seed=0, progress=None,
                   allow_outside_images=False, max_pixels=MAX_PICTURE_PIXELS):
    """Write the bundle of ``captions_file``'s pictures and captions into ``out`` (must not exist, or be empty:
    checked first, before any picture is encoded, and again as the bundle is put in place).

    ``encoder``: a built :class:`captionkit.encoders.Encoder`. ``pca_dim``: also write features reduced by a PCA
    fitted on the training pictures (and ``pca.h5``). ``allow_outside_images``: see :func:`read_captions_file`.
    ``max_pixels``: larger pictures are unreadable (:func:`captionkit.images.read_image`).
    ``progress(stage, done, total)``. The bundle appears only once complete. Returns an :class:`ImportReport`, also
    written as ``import.json``.
    """
    integer("min_count", min_count)
    integer("max_words", max_words)
    check_new_directory(out)
    dropped = []
    pictures = read_captions_file(captions_file, images_dir, seed, allow_outside_images)
    pictures = _drop_missing(_drop_empty(pictures, dropped), skip_missing, dropped)
    by_split = {split: [p for p in pictures if p.split == split] for split in SPLITS}
    for split in REQUIRED_SPLITS:
        if not by_split[split]:
            raise CaptionFileError(f"{captions_file}: no {split} pictures with captions; a bundle needs train and val")
    splits = REQUIRED_SPLITS + (("test",) if by_split["test"] else ())

    features = {}
    for split in splits:
        def report(done, total, split=split):
            if progress is not None:
                progress(f"encoding {split} pictures", done, total)
        paths = [p.path for p in by_split[split]]
        if skip_missing:
            encoded, unreadable = encode_files(encoder, paths, report, skip_unreadable=True, max_pixels=max_pixels)
        else:
            encoded, unreadable = encode_files(encoder, paths, report, max_pixels=max_pixels), []
        bad = {row for row, _ in unreadable}
        dropped.extend(f"{by_split[split][row].source}: {message}; picture dropped" for row, message in unreadable)
        by_split[split] = [p for row, p in enumerate(by_split[split]) if row not in bad]
        features[split] = np.delete(encoded, sorted(bad), axis=0)
        if not by_split[split]:
            raise CaptionFileError(f"{captions_file}: none of the {split} pictures could be read")

    idx_to_word = build_vocabulary(by_split["train"], min_count)
    word_to_idx = {word: idx for idx, word in enumerate(idx_to_word)}
    pca = None
    if pca_dim is not None:
        pca = Pca.fit(features["train"], pca_dim)
    record = EncoderRecord.of(encoder, None if pca is None else pca.dim)
    report = ImportReport(Path(out), str(captions_file), record.spec, record.output_dim, record.pca_dim,
                          len(idx_to_word), int(min_count), int(max_words), dropped=dropped, regions=record.regions)

    with staged_directory(out) as staging:
        files = BundleFiles(staging, splits)
        encoded = {}
        for split in splits:
            captions = [p.captions for p in by_split[split]]
            encoded[split] = encode_captions(captions, word_to_idx, max_words)
            report.images[split], report.captions[split] = len(captions), len(encoded[split][0])
            report.unknown_words += sum(word not in word_to_idx
                                        for cs in captions for c in cs for word in c[:max_words])
            report.cut_captions += sum(len(c) > max_words for cs in captions for c in cs)
            files.write_features(split, features[split])
            if pca is not None:
                files.write_features(split, pca.transform(features[split]), reduced=True)
            files.write_urls(split, [str(p.path.resolve()) for p in by_split[split]])
        files.write_captions(encoded)
        files.write_vocabulary(idx_to_word)
        record.save(staging / ENCODER_FILE)
        if pca is not None:
            pca.save(staging / PCA_FILE)
        (staging / IMPORT_REPORT).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
    return report
