"""Replacing files atomically, so that a crash or a kill mid-write never leaves a half-written file behind.

The content goes to a temporary file in the target's directory, is flushed and fsync'ed, and then renamed over the
target with ``os.replace`` (atomic on POSIX and Windows); the directory is fsync'ed too so the rename itself survives
a power cut. A reader sees either the old file or the complete new one, never a mixture.
"""
import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text"]


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

    ``mode`` is ``"wb"`` or ``"w"`` (text, then ``encoding`` defaults to UTF-8). On an exception the temporary file
    is removed and ``path`` is left as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp_name = directory / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
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
