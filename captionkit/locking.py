"""Exclusive ownership of a directory by one process, through an OS file lock.

:class:`DirectoryLock` holds an advisory ``flock`` on a lock file inside the directory for as long as the owner
lives: the operating system releases it on any exit, SIGKILL included, so a lock is never stale. The file also
holds the owner's pid, host and start time, so a refused second writer can say who holds it. Readers take no lock.
"""
import json
import os
import socket
import time
from pathlib import Path

from captionkit.safeio import read_json

__all__ = ["DirectoryLock", "LockHeldError", "is_locked"]

try:
    import fcntl
except ImportError:  # Windows: no flock; locking is skipped there (captionkit's CI and users run POSIX systems)
    fcntl = None


class LockHeldError(RuntimeError):
    """Another process holds the lock; the message names its pid, host and start time."""


def _owner_text(path):
    try:
        owner = read_json(path, 2**16, "lock")  # the owner writes a line of about 80 bytes
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(owner["started"])))
        return f"pid {int(owner['pid'])} on {owner['host']}, since {started}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not recorded itself yet"


class DirectoryLock:
    """``with DirectoryLock(directory, what="run"):`` -- own ``directory`` or raise :class:`LockHeldError` at once.

    The lock file (``name``, default ``.lock``) stays in the directory after release; it is the lock's identity,
    and removing it while another process waits on it would let two owners in.
    """

    def __init__(self, directory, name=".lock", what="directory"):
        self.path = Path(directory) / name
        self.what = what
        self._fd = None

    def acquire(self):
        """Take the lock (a no-op when this object holds it already) or raise :class:`LockHeldError` at once."""
        if fcntl is None or self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeldError(f"{self.path.parent}: another captionkit process is writing this {self.what} "
                                f"({_owner_text(self.path)}); wait for it to finish, or choose another "
                                "directory") from None
        except BaseException:
            os.close(fd)
            raise
        owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode("utf-8"), 0)
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
        return False


def is_locked(directory, name=".lock"):
    """Whether a live process holds ``directory``'s lock (False when there is no lock file)."""
    path = Path(directory) / name
    if fcntl is None or not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock, if it got one
    return False
