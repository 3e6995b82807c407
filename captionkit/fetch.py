"""Download a dataset bundle, verify it, and unpack it safely into a directory.

The order matters for safety: the archive is downloaded to a temporary file, its size and SHA-256 are checked, every
entry is screened (no absolute paths, no ``..``, no links or special files) and only then is it unpacked into a
temporary directory beside the target. The target appears, by one rename, only once the bundle is complete, so a
failure at any step leaves no half-written directory behind.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from captionkit.layout import bundle_paths

__all__ = ["BUNDLES", "BundleSource", "FetchError", "FetchResult", "fetch_bundle"]


@dataclass(frozen=True)
class BundleSource:
    """Where a bundle archive lives and what it must look like."""

    url: str
    top_folder: str  # the archive unpacks into this one folder, which becomes the target directory
    size: int | None  # bytes of the archive; None when not recorded
    sha256: str | None  # hex digest of the archive; None when not recorded


# The archives captionkit knows how to fetch. The COCO URL is the one CS231n's get_datasets.sh downloads. Its size
# and SHA-256 have not been recorded yet (captionkit is developed without access to that host): until they are,
# fetch checks the download against the server's Content-Length and the zip's own CRCs only and says so. To record
# them, download the archive from a trusted network and fill in `stat -c %s` and `sha256sum` of it here.
BUNDLES = {
    "coco": BundleSource(
        url="http://cs231n.stanford.edu/coco_captioning.zip",
        top_folder="coco_captioning",
        size=None,
        sha256=None,
    ),
}

# Ceiling on bytes downloaded when no size is known, and on the bytes an archive may unpack to: a bound against a
# server or archive that would otherwise fill the disk.
MAX_BYTES = 16 * 1024 ** 3
_CHUNK = 1024 * 1024
_SCHEMES = ("http", "https", "file")


class FetchError(RuntimeError):
    """A bundle could not be downloaded, failed verification, or holds unsafe entries."""


@dataclass(frozen=True)
class FetchResult:
    """What fetch_bundle put where, and what it verified."""

    directory: Path
    url: str
    size: int
    sha256: str
    checksum_verified: bool  # False when no expected SHA-256 was known: only size and zip integrity were checked


ProgressCallback = Callable[[int, int | None], None]


def fetch_bundle(name: str, directory, *, url: str | None = None, sha256: str | None = None,
                 progress: ProgressCallback | None = None, timeout: float = 60.0) -> FetchResult:
    """Download bundle ``name`` (a key of BUNDLES) and unpack it so that ``directory`` holds the bundle's files.

    ``url`` replaces the bundle's public URL (a mirror, or ``file://`` for a local copy of the same archive);
    ``sha256`` replaces the recorded checksum, and with it the recorded size. ``progress(done_bytes, total_bytes)``
    is called as the download advances; total is None when unknown. ``directory`` must not exist or be empty.
    Raises FetchError (or ValueError for malformed arguments) with a message meant for the user.
    """
    if name not in BUNDLES:
        raise ValueError(f"unknown bundle {name!r}; known: {', '.join(sorted(BUNDLES))}")
    source = BUNDLES[name]
    url = url or source.url
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in _SCHEMES:
        raise ValueError(f"unsupported URL {url!r}: use one of {', '.join(s + '://' for s in _SCHEMES)}")
    if sha256 is not None:
        expected_sha256, expected_size = _normalise_sha256(sha256), None
    else:
        expected_sha256, expected_size = source.sha256, source.size

    directory = Path(directory).absolute()
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FetchError(f"{directory} already exists and is not an empty directory; remove it or choose another")
    try:
        return _fetch_into(directory, source.top_folder, url, expected_size, expected_sha256, progress, timeout)
    except OSError as err:  # local trouble: permissions, a full disk
        raise FetchError(f"could not write the bundle into {directory}: {err}") from err


def _fetch_into(directory: Path, top_folder, url, expected_size, expected_sha256, progress, timeout) -> FetchResult:
    """Download, verify and unpack in a staging folder beside ``directory``, then rename into place."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.fetch-", dir=directory.parent))
    try:
        archive = staging / "archive.zip"
        size, digest = _download(url, archive, expected_size, timeout, progress)
        if expected_size is not None and size != expected_size:
            raise FetchError(f"{url}: downloaded {size} bytes, expected {expected_size}")
        if expected_sha256 is not None and digest != expected_sha256:
            raise FetchError(f"{url}: SHA-256 mismatch: got {digest}, expected {expected_sha256}; nothing was unpacked")
        bundle_root = _unpack_safely(archive, staging / "unpacked", top_folder, url)
        missing = sorted(p.name for p in bundle_paths(bundle_root, layout="cs231n").values() if not p.is_file())
        if missing:
            raise FetchError(f"{url}: the archive's {top_folder}/ lacks bundle files: {', '.join(missing)}")
        os.replace(bundle_root, directory)  # one atomic rename; also takes the place of an empty directory
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return FetchResult(directory, url, size, digest, checksum_verified=expected_sha256 is not None)


def _normalise_sha256(value: str) -> str:
    digest = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"SHA-256 must be 64 hexadecimal digits, got {value!r}")
    return digest


def _download(url, destination: Path, expected_size, timeout, progress) -> tuple[int, str]:
    """Stream ``url`` into ``destination``; return (bytes written, hex SHA-256). Raises FetchError."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise FetchError(f"{url} answered HTTP {err.code} {err.reason}") from err
    except OSError as err:  # URLError (refused, unresolvable host, missing file) or a timeout
        reason = getattr(err, "reason", err)
        hint = "" if url.lower().startswith("file:") else " (are you offline?)"
        raise FetchError(f"could not reach {url}: {reason}{hint}") from err
    with response:
        announced = response.headers.get("Content-Length")
        announced = int(announced) if announced and announced.isdigit() else None
        if announced is not None and expected_size is not None and announced != expected_size:
            raise FetchError(f"{url}: server announces {announced} bytes, expected {expected_size}")
        total = announced if announced is not None else expected_size
        limit = total if total is not None else MAX_BYTES
        hasher, done = hashlib.sha256(), 0
        with open(destination, "wb") as out:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.IncompleteRead, OSError) as err:  # connection dropped or stalled mid-way
                    raise FetchError(f"download of {url} broke off after {done} bytes: {err}") from err
                if not chunk:
                    break
                done += len(chunk)
                if done > limit:
                    raise FetchError(f"{url}: server sent more than the {limit} bytes expected; aborted")
                hasher.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress(done, total)
    if total is not None and done != total:
        raise FetchError(f"download of {url} is truncated: got {done} of {total} bytes")
    return done, hasher.hexdigest()


def _unpack_safely(archive: Path, destination: Path, top_folder: str, url: str) -> Path:
    """Screen every entry of the zip, then unpack it into ``destination``; return the archive's top folder.

    Unpacking checks each entry's CRC, so a corrupt archive fails here, inside the staging folder.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = zf.infolist()
            for entry in entries:
                problem = _unsafe_entry_reason(entry)
                if problem:
                    raise FetchError(f"{url}: refusing to unpack: entry {entry.filename!r} {problem}")
            if sum(e.file_size for e in entries) > MAX_BYTES:
                raise FetchError(f"{url}: refusing to unpack: entries add up to more than {MAX_BYTES} bytes")
            zf.extractall(destination)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise FetchError(f"{url}: not a valid or complete zip archive: {err}") from err
    bundle_root = destination / top_folder
    if not bundle_root.is_dir():
        raise FetchError(f"{url}: the archive has no top folder {top_folder}/")
    return bundle_root


def _unsafe_entry_reason(entry: zipfile.ZipInfo) -> str | None:
    """Why unpacking ``entry`` could write outside the target, or None when it is a plain file or folder inside."""
    name = entry.filename.replace("\\", "/")  # archives made on Windows may use either separator
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "has a '..' component"
    file_type = stat.S_IFMT(entry.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        # Links are refused outright rather than resolved: a bundle has none, and a chain of links that each look
        # harmless can still lead outside the target.
        return "is a symbolic link"
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is a special file"
    return None
