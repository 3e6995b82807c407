"""Download a dataset bundle, verify it, and unpack it safely into a directory.

The order matters for safety: the archive is downloaded to a temporary file, its size and SHA-256 are checked, every
entry is screened (no absolute paths, no ``..``, no links or special files, no two entries unpacking to the same
path) and only then is it unpacked into a temporary directory beside the target. The unpacked bundle then goes
through the bundle reader's checks (:func:`captionkit.bundle.reader.check_bundle`, those of ``load_coco_data``). The
target appears, by one rename, only once the bundle is complete and readable, so a failure at any step leaves no
half-written directory behind.

The temporary ("staging") folder, ``.NAME.fetch-RANDOM`` beside the target, is owned by its fetch through a
:class:`~captionkit.locking.DirectoryLock` held for the fetch's life. It is removed on every error, on Ctrl-C and on
SIGTERM. A fetch killed outright (SIGKILL, power loss) cannot remove it, but the operating system releases its lock,
so the next fetch of the same target finds the folder unlocked, knows it is stale and removes it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath

from captionkit import locking
from captionkit.checks import integer, number
from captionkit.bundle.layout import bundle_paths
from captionkit.bundle.reader import BundleError, check_bundle
from captionkit.locking import DirectoryLock, LockHeldError

__all__ = ["BUNDLES", "DEFAULT_DEADLINE", "MAX_BYTES", "BundleSource", "FetchError", "FetchInterrupted",
           "FetchResult", "fetch_bundle", "parse_size"]


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

# Default ceiling on bytes downloaded (fetch_bundle's max_size), and the ceiling on the bytes an archive may unpack
# to: a bound against a server or archive that would otherwise fill the disk.
MAX_BYTES = 16 * 1024 ** 3
# Default bound on the whole download, connection included (fetch_bundle's deadline): the COCO bundle is about 1 GB,
# so this allows a link of roughly 150 kB/s and still stops a server that trickles forever.
DEFAULT_DEADLINE = 2 * 60 * 60.0
_CHUNK = 1024 * 1024
_SCHEMES = ("http", "https", "file")
_LOCK_NAME = ".fetch.lock"
_ARCHIVE_NAME = "archive.zip"


class FetchError(RuntimeError):
    """A bundle could not be downloaded, failed verification, or holds unsafe entries."""


class FetchInterrupted(FetchError):
    """SIGTERM arrived during fetch_bundle; the staging folder was removed first. ``signum`` is the signal."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; nothing was kept")


@dataclass(frozen=True)
class FetchResult:
    """What fetch_bundle put where, and what it verified."""

    directory: Path
    url: str
    size: int
    sha256: str
    checksum_verified: bool  # False when no expected SHA-256 was known: only size and zip integrity were checked
    # Partial downloads left by earlier, killed fetches of the same target that this fetch removed: (folder, bytes).
    removed: tuple[tuple[Path, int], ...] = ()


ProgressCallback = Callable[[int, int | None], None]
RemovedCallback = Callable[[Path, int], None]


def fetch_bundle(name: str, directory, *, url: str | None = None, sha256: str | None = None,
                 progress: ProgressCallback | None = None, timeout: float = 60.0,
                 deadline: float | None = DEFAULT_DEADLINE, max_size: int = MAX_BYTES,
                 on_removed: RemovedCallback | None = None) -> FetchResult:
    """Download bundle ``name`` (a key of BUNDLES) and unpack it so that ``directory`` holds the bundle's files.

    ``url`` replaces the bundle's public URL (a mirror, or ``file://`` for a local copy of the same archive);
    ``sha256`` replaces the recorded checksum, and with it the recorded size. ``progress(done_bytes, total_bytes)``
    is called as the download advances; total is None when unknown. ``directory`` must not exist or be empty.

    ``timeout`` bounds each wait for the server (connecting, each read); ``deadline`` (seconds, None for none) bounds
    the whole download, however the server paces its bytes; ``max_size`` bounds the bytes downloaded (a known or
    announced size is the bound when smaller). Stale staging folders of earlier, killed fetches of the same target
    are removed first; each is reported to ``on_removed(folder, bytes)`` and listed in ``FetchResult.removed``.

    Raises FetchError (FetchInterrupted on SIGTERM, when called from the main thread) or ValueError for malformed
    arguments, with a message meant for the user. On any failure, and on Ctrl-C, nothing is left beside the target.
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
    number("timeout", timeout, above=True)
    number("deadline", deadline, above=True, optional=True)
    max_size = integer("max_size", max_size)

    directory = Path(directory).absolute()
    with _SigtermGuard() as guard:
        try:
            removed = _remove_stale_staging(directory, on_removed)
            if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
                raise FetchError(f"{directory} already exists and is not an empty directory; remove it or choose "
                                 "another")
            result = _fetch_into(directory, source.top_folder, url, expected_size, expected_sha256, progress,
                                 timeout, deadline, max_size, guard)
        except _Terminated as err:
            raise FetchInterrupted(err.signum) from None
        except OSError as err:  # local trouble: permissions, a full disk
            if guard.pending:
                raise FetchInterrupted(guard.pending) from None
            raise FetchError(f"could not write the bundle into {directory}: {err}") from err
        except BaseException:
            if guard.pending:  # SIGTERM arrived while an error was being cleaned up
                raise FetchInterrupted(guard.pending) from None
            raise
    return dataclasses.replace(result, removed=tuple(removed))


def parse_size(text) -> int:
    """Bytes from ``"123"``, ``"500M"``, ``"1.5GiB"``, ``"2GB"``...: K, M, G, T (optionally KiB, MiB...) are powers
    of 1024; KB, MB, GB, TB are powers of 1000. Raises ValueError for anything else or a size below one byte."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    factors = {"": 1, "b": 1}
    for power, letter in enumerate("kmgt", start=1):
        factors.update({letter: 1024 ** power, letter + "ib": 1024 ** power, letter + "b": 1000 ** power})
    if unit not in factors:
        raise ValueError(f"not a size: {text!r}; give bytes, or a number with K, M, G or T (powers of 1024) or "
                         "KB, MB, GB or TB (powers of 1000)")
    size = int(Fraction(match.group(1)) * factors[unit])
    if size < 1:
        raise ValueError(f"a size must be at least one byte, got {text!r}")
    return size


# --- Staging folders: owned through a lock, removed when their owner is gone -------------------------------------

def _staging_prefix(directory: Path) -> str:
    return f".{directory.name}.fetch-"


def _remove_stale_staging(directory: Path, on_removed: RemovedCallback | None) -> list[tuple[Path, int]]:
    """Remove the staging folders of earlier fetches of ``directory`` whose owner is gone; return (folder, bytes).

    A folder is stale when no process holds its lock: a live fetch holds it from just after creating the folder
    until the folder is gone, and the OS releases it when the fetch dies however it dies. To remove a folder this
    fetch takes its lock itself (creating the lock file if a fetch died before making it, or if an older captionkit
    left the folder), so a fetch that has just created that folder and not yet locked it cannot lock it now: it
    makes another folder instead (see _make_staging).
    """
    if locking.fcntl is None:  # no flock on this system: a live fetch's folder cannot be told from a dead one's
        return []
    removed = []
    prefix = _staging_prefix(directory)
    try:
        candidates = sorted(p for p in directory.parent.iterdir() if p.name.startswith(prefix))
    except OSError:  # no parent folder yet, or not readable: nothing this fetch could remove
        return []
    for folder in candidates:
        if folder.is_symlink() or not folder.is_dir():
            continue
        try:
            lock = DirectoryLock(folder, name=_LOCK_NAME, what="download").acquire()
        except (LockHeldError, OSError):  # a live fetch owns it, or another fetch removed it meanwhile
            continue
        try:
            size = _tree_size(folder)
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            lock.release()
        if not folder.exists():
            removed.append((folder, size))
            if on_removed is not None:
                on_removed(folder, size)
    return removed


def _tree_size(folder: Path) -> int:
    """Bytes of the files under ``folder``, its lock file aside (that is this fetch's, written just now)."""
    total = 0
    for root, _, files in os.walk(folder):
        for file in files:
            if root == str(folder) and file == _LOCK_NAME:
                continue
            try:
                total += os.lstat(os.path.join(root, file)).st_size
            except OSError:
                pass
    return total


def _make_staging(directory: Path) -> tuple[Path, DirectoryLock]:
    """Create and lock this fetch's staging folder beside ``directory``."""
    for _ in range(5):
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(directory), dir=directory.parent))
        try:
            return staging, DirectoryLock(staging, name=_LOCK_NAME, what="download").acquire()
        except (LockHeldError, FileNotFoundError):
            # Another fetch's stale-folder sweep (or a probe of the lock) took the fresh folder in the instant
            # before this fetch locked it. The folder is this fetch's and holds nothing: remove it, make another.
            shutil.rmtree(staging, ignore_errors=True)
            continue
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    raise FetchError(f"could not create a staging folder in {directory.parent}: other fetches kept removing it")


def _make_parents(path: Path) -> list[Path]:
    """mkdir -p ``path``; return the folders created, deepest first, so that a failed fetch can remove them."""
    created = []
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        created.append(folder)
    path.mkdir(parents=True, exist_ok=True)
    return created


def _fetch_into(directory: Path, top_folder, url, expected_size, expected_sha256, progress, timeout, deadline,
                max_size, guard) -> FetchResult:
    """Download, verify and unpack in a staging folder beside ``directory``, then rename into place."""
    created_parents, staging, lock = [], None, None
    done = False
    try:
        created_parents = _make_parents(directory.parent)
        staging, lock = _make_staging(directory)
        archive = staging / _ARCHIVE_NAME
        size, digest = _download(url, archive, expected_size, timeout, deadline, max_size, progress)
        if expected_size is not None and size != expected_size:
            raise FetchError(f"{url}: downloaded {size} bytes, expected {expected_size}")
        if expected_sha256 is not None and digest != expected_sha256:
            raise FetchError(f"{url}: SHA-256 mismatch: got {digest}, expected {expected_sha256}; nothing was unpacked")
        bundle_root = _unpack_safely(archive, staging / "unpacked", top_folder, url)
        missing = sorted(p.name for p in bundle_paths(bundle_root, layout="cs231n").values() if not p.is_file())
        if missing:
            raise FetchError(f"{url}: the archive's {top_folder}/ lacks bundle files: {', '.join(missing)}")
        try:
            check_bundle(bundle_root)  # what load_coco_data would refuse is not put in place
        except BundleError as exc:
            raise FetchError(f"{url}: the archive's {top_folder}/ is not a readable bundle: {exc}") from exc
        with guard.quiet():  # a SIGTERM now is acted on after the rename, not between its start and its record
            os.replace(bundle_root, directory)  # one atomic rename; also takes the place of an empty directory
            done = True
    finally:
        with guard.quiet():  # let a second SIGTERM not cut the cleanup short
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            if lock is not None:
                lock.release()
            if not done:
                for folder in created_parents:
                    try:
                        folder.rmdir()
                    except OSError:
                        break
    return FetchResult(directory, url, size, digest, checksum_verified=expected_sha256 is not None)


def _normalise_sha256(value: str) -> str:
    digest = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"SHA-256 must be 64 hexadecimal digits, got {value!r}")
    return digest


# --- SIGTERM: clean up as on Ctrl-C ------------------------------------------------------------------------------

class _Terminated(BaseException):
    """Raised by the SIGTERM handler. A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on
    the way (urllib's, zipfile's) can swallow it before the staging folder's cleanup runs."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class _SigtermGuard:
    """While active (main thread only), SIGTERM raises _Terminated once; inside ``quiet()``, or after the first
    raise, a SIGTERM is recorded in ``pending`` instead. On exit the previous handler is restored, and a pending
    SIGTERM after a successful fetch is delivered to it, so that the process ends as SIGTERM asked."""

    def __init__(self):
        self.pending = None
        self._quiet = 0
        self._raised = False
        self._previous = None
        self._active = False

    def __enter__(self):
        if hasattr(signal, "SIGTERM") and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._active = True
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._active:
            self._active = False
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            if self.pending and exc_type is None:
                signal.raise_signal(self.pending)
        return False

    def _handle(self, signum, frame):
        if self._quiet or self._raised:
            self.pending = signum
            return
        self._raised = True
        raise _Terminated(signum)

    @contextmanager
    def quiet(self):
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1


# --- Download with an overall deadline --------------------------------------------------------------------------

class _Deadline:
    """An overall deadline for one download, enforced by a watchdog thread.

    A per-read timeout cannot bound a download: each byte that arrives starts a new wait, so a server sending a byte
    every few seconds is never cut off. Shrinking the socket timeout to the time left before each read does not do
    it either, because one read call makes many system calls: BufferedReader.read(n) waits until it has n bytes, and
    http.client reads the status line, headers and chunk-size lines with readline, each byte of which may arrive just
    inside the timeout. So every socket the download opens (through the connection classes below, redirects and
    proxies included) is registered here, and when the deadline passes a timer thread shuts it down
    (shutdown(SHUT_RDWR), which wakes a read blocked in another thread at once: it returns end-of-file or fails).
    The reading loop checks ``expired`` after every read and between reads, so a read cut short this way becomes
    the deadline error rather than a truncated download. Connecting is bounded by the socket timeout, which is set
    to min(timeout, time left); a TLS handshake likewise, as a whole (the ssl module counts the socket timeout from
    the handshake's start, however its bytes are paced; the raw socket is handed to the TLS layer before it can be
    registered here). Name resolution uses the system resolver and cannot be interrupted; file:// reads are checked
    between chunks.
    """

    def __init__(self, seconds):
        self.seconds = seconds
        self._end = None if seconds is None else time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets = []
        self._timer = None
        self.expired = False

    def start(self):
        if self.seconds is not None:
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def stop(self):
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._sockets.clear()

    def remaining(self):
        return None if self._end is None else self._end - time.monotonic()

    def passed(self):
        return self.expired or (self._end is not None and time.monotonic() >= self._end)

    def watch(self, sock):
        with self._lock:
            if self.expired:
                _shut(sock)
            else:
                self._sockets.append(sock)
        return sock

    def _expire(self):
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def error(self, url, done):
        return FetchError(f"download of {url} did not finish within its deadline of {self.seconds:g} s (--max-time): "
                          f"{done} bytes received; aborted")


def _shut(sock):
    try:
        # socket.socket's own shutdown, also for an SSLSocket: it acts on the connection without touching the TLS
        # state that the reading thread is using.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


def _watched(connection_class, deadline: _Deadline):
    """``connection_class`` with every socket it opens registered with ``deadline``."""

    class Watched(connection_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            create = getattr(self, "_create_connection", None)
            if create is not None:  # the plain TCP socket: watched through a proxy tunnel's setup too
                self._create_connection = lambda *a, **k: deadline.watch(create(*a, **k))

        def connect(self):
            super().connect()
            deadline.watch(self.sock)  # for https, the TLS socket that now owns the connection

    return Watched


def _opener(deadline: _Deadline):
    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(_watched(http.client.HTTPConnection, deadline), req)

    handlers = [HTTP()]
    if hasattr(http.client, "HTTPSConnection"):
        class HTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(_watched(http.client.HTTPSConnection, deadline), req, context=None)

        handlers.append(HTTPS())
    return urllib.request.build_opener(*handlers)


def _download(url, destination: Path, expected_size, timeout, deadline_seconds, max_size, progress):
    """Stream ``url`` into ``destination``; return (bytes written, hex SHA-256). Raises FetchError."""
    if expected_size is not None and expected_size > max_size:
        raise FetchError(f"{url}: the bundle is {expected_size} bytes, more than the limit of {max_size} bytes "
                         "(--max-size); nothing was downloaded")
    deadline = _Deadline(deadline_seconds).start()
    try:
        return _stream(url, destination, expected_size, timeout, deadline, max_size, progress)
    finally:
        deadline.stop()


def _stream(url, destination, expected_size, timeout, deadline: _Deadline, max_size, progress):
    remaining = deadline.remaining()
    if remaining is not None:
        if remaining <= 0:
            raise deadline.error(url, 0)
        timeout = min(timeout, remaining)
    try:
        response = _opener(deadline).open(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        raise FetchError(f"{url} answered HTTP {err.code} {err.reason}") from err
    except (OSError, http.client.HTTPException) as err:  # URLError (refused, unresolvable, missing file), timeout
        if deadline.passed():
            raise deadline.error(url, 0) from err
        reason = getattr(err, "reason", None) or err
        hint = "" if url.lower().startswith("file:") else " (are you offline?)"
        raise FetchError(f"could not reach {url}: {reason}{hint}") from err
    with response:
        announced = response.headers.get("Content-Length")
        announced = int(announced) if announced and announced.isdigit() else None
        if announced is not None and expected_size is not None and announced != expected_size:
            raise FetchError(f"{url}: server announces {announced} bytes, expected {expected_size}")
        if announced is not None and announced > max_size:
            raise FetchError(f"{url}: server announces {announced} bytes, more than the limit of {max_size} bytes "
                             "(--max-size); nothing was downloaded")
        total = announced if announced is not None else expected_size
        limit = total if total is not None else max_size
        read = getattr(response, "read1", response.read)  # one system call per read: the deadline is checked often
        hasher, done = hashlib.sha256(), 0
        with open(destination, "wb") as out:
            while True:
                if deadline.passed():
                    raise deadline.error(url, done)
                try:
                    chunk = read(_CHUNK)
                except (http.client.HTTPException, OSError) as err:  # connection dropped, stalled or shut down
                    if deadline.passed():
                        raise deadline.error(url, done) from err
                    raise FetchError(f"download of {url} broke off after {done} bytes: {err}") from err
                if not chunk:
                    if deadline.expired:  # the watchdog's shutdown, not the server, ended the stream
                        raise deadline.error(url, done)
                    break
                done += len(chunk)
                if done > limit:
                    if total is None:
                        raise FetchError(f"{url}: server sent more than the limit of {limit} bytes (--max-size); "
                                         "aborted")
                    raise FetchError(f"{url}: server sent more than the {limit} bytes expected; aborted")
                hasher.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress(done, total)
    if total is not None and done != total:
        raise FetchError(f"download of {url} is truncated: got {done} of {total} bytes")
    return done, hasher.hexdigest()


# --- Unpacking ---------------------------------------------------------------------------------------------------

def _unpack_safely(archive: Path, destination: Path, top_folder: str, url: str) -> Path:
    """Screen every entry of the zip, then unpack it into ``destination``; return the archive's top folder.

    Unpacking checks each entry's CRC, so a corrupt archive fails here, inside the staging folder.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = zf.infolist()
            seen = {}
            for entry in entries:
                problem = _unsafe_entry_reason(entry)
                if problem:
                    raise FetchError(f"{url}: refusing to unpack: entry {entry.filename!r} {problem}")
                path = _entry_path(entry.filename)
                # Letter case is ignored because on a case-insensitive filesystem (macOS, Windows) two such entries
                # are one file too.
                key = tuple(part.casefold() for part in path)
                if key in seen:
                    # zipfile would let the later entry overwrite the earlier (and which one is "the" file differs
                    # between tools), so an archive with two entries for one path is refused, not guessed at.
                    first, first_path = seen[key]
                    same = "both unpack to" if first_path == path else "differ only in letter case, one file on " \
                        "case-insensitive filesystems, at"
                    raise FetchError(f"{url}: refusing to unpack: entries {first!r} and {entry.filename!r} "
                                     f"{same} {'/'.join(first_path)!r}")
                seen[key] = entry.filename, path
            if sum(e.file_size for e in entries) > MAX_BYTES:
                raise FetchError(f"{url}: refusing to unpack: entries add up to more than {MAX_BYTES} bytes")
            zf.extractall(destination)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise FetchError(f"{url}: not a valid or complete zip archive: {err}") from err
    bundle_root = destination / top_folder
    if not bundle_root.is_dir():
        raise FetchError(f"{url}: the archive has no top folder {top_folder}/")
    return bundle_root


def _entry_path(filename: str) -> tuple[str, ...]:
    """The path an entry unpacks to, normalised: either separator, repeated or trailing slashes and ``.`` parts
    ignored, so ``a/b.txt``, ``a\\b.txt``, ``a//b.txt`` and ``./a/b.txt`` are one path (and folder ``a/`` is ``a``)."""
    return tuple(part for part in re.split(r"[/\\]", filename) if part not in ("", "."))


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
