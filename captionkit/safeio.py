"""The file-safety rules every reader and writer of captionkit's files shares, each written once.

Reading: a file given to captionkit may be anything (a FIFO that never ends, /dev/zero, a sparse file of
terabytes, JSON nested a million deep, a truncated HDF5 file). :func:`read_bounded` reads only regular files and at
most a stated size (:func:`read_lines` the same, a line at a time); :func:`parse_json` and :func:`read_json` turn
every way JSON can fail into one error naming the file; :func:`check_format` checks a document's format header;
:class:`hdf5_errors` names the file in h5py's errors.

Writing: nothing captionkit writes is ever seen half-written. :func:`atomic_write` replaces a file by renaming a
complete temporary one over it, :func:`staged_directory` does the same for a whole folder, and both name their
temporary files with :func:`temporary_path` (which :data:`TEMPORARY_NAME` recognises, so leftovers of a crash can be
swept).
"""
import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import stat
from pathlib import Path

__all__ = ["TEMPORARY_NAME", "atomic_write", "atomic_write_text", "check_format", "check_new_directory",
           "hdf5_errors", "parse_json", "read_bounded", "read_head", "read_json", "read_lines", "size_text",
           "staged_directory", "temporary_path"]

# ".NAME.PID-XXXXXXXX.tmp": hidden, the writer's pid, 8 random hex digits.
TEMPORARY_NAME = re.compile(r"^\..+\.\d+-[0-9a-f]{8}\.tmp$")


def size_text(nbytes):
    """``nbytes`` for a message: "3.8 GiB", "2.0 KiB", "512 bytes"."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def _a(noun):
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def _file_kind(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path, what, error):
    """A binary file object of the regular file ``path``, or ``error`` naming it (see :func:`read_bounded`)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"{path}: is {_file_kind(mode)}; {_a(what)} is read only from a regular file")
    return os.fdopen(fd, "rb")


def read_bounded(path, limit, what, error=ValueError):
    """The bytes of the regular file ``path``, refused with ``error`` naming ``path`` when it is missing, is not
    a regular file (a FIFO, a device, a directory) or holds more than ``limit`` bytes; ``what`` names the file in
    the message ("vocabulary file", "caption file").

    The file is opened without blocking and checked on the open descriptor, so a FIFO is refused rather than
    waited on, and a file swapped after a check is not read unchecked.
    """
    with _open_regular(path, what, error) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:  # refused before reading: a file of gigabytes is not read only to be refused
            raise error(f"{path}: {_a(what)} is at most {size_text(limit)} ({limit} bytes); this one has {size}")
        try:
            raw = f.read(limit + 1)
        except OSError as exc:
            raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc
        if len(raw) > limit:
            raise error(f"{path}: {_a(what)} is at most {size_text(limit)} ({limit} bytes); this one has "
                        f"{os.fstat(f.fileno()).st_size}")
    return raw


def read_head(path, count, what, error=ValueError):
    """The first ``count`` bytes (or fewer) of the regular file ``path``, refused as :func:`read_bounded` does: to
    recognise a file by its start before reading it whole."""
    with _open_regular(path, what, error) as f:
        try:
            return f.read(count)
        except OSError as exc:
            raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc


def read_lines(path, limit, line_limit, what, error=ValueError):
    """``(number, bytes)`` of each line of the regular file ``path`` (numbered from 1, the newline kept), read one
    line at a time and refused with ``error`` naming ``path`` as :func:`read_bounded` does, or when the file holds
    more than ``limit`` bytes. A line longer than ``line_limit`` bytes comes as ``(number, None)``, read past and
    not kept, for the caller to skip or refuse: a file of one endless line is never held whole.
    """
    with _open_regular(path, what, error) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise error(f"{path}: {_a(what)} is at most {size_text(limit)} ({limit} bytes); this one has {size}")
        total = number = 0
        try:
            while line := f.readline(line_limit + 1):
                number += 1
                total += len(line)
                overlong = len(line) > line_limit and not line.endswith(b"\n")
                while overlong and (rest := f.readline(line_limit)):
                    total += len(rest)
                    overlong = not rest.endswith(b"\n") and total <= limit
                if total > limit:  # the file grew while being read
                    raise error(f"{path}: {_a(what)} is at most {size_text(limit)} ({limit} bytes)")
                yield number, None if len(line) > line_limit else line
        except OSError as exc:
            raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc


def parse_json(raw, source, what, error=ValueError):
    """The JSON value in the bytes ``raw`` (UTF-8), or ``error`` naming ``source``: "not a readable JSON
    vocabulary (...)", "nested too deeply" for a document that would exhaust the parser's recursion."""
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise error(f"{source}: not a readable JSON {what} (nested too deeply)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{source}: not a readable JSON {what} ({exc})") from exc


def read_json(path, limit, what, error=ValueError):
    """The JSON value in the regular file ``path`` of at most ``limit`` bytes (:func:`read_bounded`,
    :func:`parse_json`); every failure raises ``error`` in one line naming ``path`` and ``what`` the document is
    ("vocabulary": "not a readable JSON vocabulary", "a vocabulary file is at most 16.0 MiB")."""
    return parse_json(read_bounded(path, limit, f"{what} file", error), path, what, error)


def check_format(document, source, fmt, version, what, error=ValueError):
    """Raise ``error`` naming ``source`` unless the JSON object ``document`` declares ``"format": fmt`` and
    ``"format_version": version``."""
    if not isinstance(document, dict) or document.get("format") != fmt:
        raise error(f"{source}: not a captionkit {what} (no \"format\": \"{fmt}\")")
    if document.get("format_version") != version:
        raise error(f"{source}: {what} format_version {document.get('format_version')!r}; this captionkit reads "
                    f"version {version}")


class hdf5_errors:  # noqa: N801 -- used as a context manager, like contextlib's lower-case classes
    """``with hdf5_errors(path, BundleError):`` turns h5py's errors about a truncated or corrupt file into
    ``error`` naming ``path``; an ``error`` raised inside passes through as it is."""

    def __init__(self, path, error):
        self.path = path
        self.error = error

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        if kind is not None and not issubclass(kind, self.error) and issubclass(
                kind, (OSError, KeyError, ValueError, RuntimeError)):
            raise self.error(f"{self.path}: cannot read HDF5 file ({exc})") from exc
        return False


def temporary_path(target):
    """A new name beside ``target`` for content that will replace it: ``.NAME.PID-XXXXXXXX.tmp``."""
    target = Path(target)
    return target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms (Windows) cannot open a directory; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """Context manager yielding a file object whose content replaces ``path`` only if the block succeeds.

    The content goes to a temporary file in the target's directory, is flushed and fsync'ed, and then renamed over
    the target with ``os.replace`` (atomic on POSIX and Windows); the directory is fsync'ed too so the rename itself
    survives a power cut. A reader sees either the old file or the complete new one, never a mixture.

    ``mode`` is ``"wb"`` or ``"w"`` (text, then ``encoding`` defaults to UTF-8). On an exception the temporary file
    is removed and ``path`` is left as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp_name = temporary_path(path)
    # os.open with mode 0o666 lets the umask decide the permissions, as for any file the user creates.
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(directory)


def atomic_write_text(path, text):
    """Write the string ``text`` to ``path`` (UTF-8) atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def check_new_directory(directory):
    """FileExistsError unless ``directory`` is missing or an empty directory: checked before a long job writes it."""
    directory = Path(directory)
    if directory.exists() and not (directory.is_dir() and not any(directory.iterdir())):
        raise FileExistsError(f"{directory}: already exists and is not an empty directory; choose a new one")


@contextlib.contextmanager
def staged_directory(directory):
    """Yield a new temporary folder beside ``directory``; when the block succeeds, rename it to ``directory``.

    ``directory`` must not exist or be empty (FileExistsError otherwise, also when something appears there while
    the block runs). On any failure the temporary folder is removed and ``directory`` is left as it was.
    """
    directory = Path(directory)
    check_new_directory(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_path(directory)
    staging.mkdir()
    try:
        yield staging
        try:
            os.rename(staging, directory)  # replaces an empty directory; fails if anything appeared there meanwhile
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise FileExistsError(f"{directory}: appeared while the bundle was being written") from exc
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
