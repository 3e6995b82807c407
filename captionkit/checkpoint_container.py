"""The npz container of a checkpoint, read as data only: nothing in a crafted file can run code or make it allocate.

:func:`open_archive` refuses pickles and anything that is not a zip by its first bytes (``np.load`` would call them
all "pickled data") and opens the rest with ``allow_pickle=False``; :func:`member_headers` reads every member's
declared shape and dtype from the zip directory and the .npy headers alone and checks them against the bytes the file
holds, so sizes are known to be honest before any array is read; :func:`read_member` maps every read failure to a
:class:`CheckpointError` naming the file and the member. What the members mean is :mod:`captionkit.checkpoint_schema`'s.
"""
import zipfile

import numpy as np

__all__ = ["MAX_META_BYTES", "CheckpointError", "member_headers", "open_archive", "read_member"]


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt, crafted, or does not fit what it is loaded for."""


def open_archive(path):
    """np.load the archive as data only; map every failure to a CheckpointError naming the file."""
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file (pass a checkpoint .npz or a run directory)")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from exc
    # Look at the first bytes ourselves: np.load would report any unknown content as "pickled data".
    if magic[:1] == b"\x80":
        raise CheckpointError(
            f"{path}: the file is a Python pickle, which captionkit never loads (checkpoints are plain arrays); "
            "refusing it"
        )
    if magic != b"PK\x03\x04":
        what = "empty" if not magic else "a single .npy array" if magic == b"\x93NUM" else "not an .npz archive"
        raise CheckpointError(f"{path}: not a captionkit checkpoint ({what})")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint; the file is truncated or corrupt ({exc})") from exc


# Bounds on what a checkpoint may declare before any of it is read (checkpoints captionkit writes are far below).
MAX_META_BYTES = 64 * 2**20  # the JSON metadata: vocabulary and options
MAX_INFLATED_BYTES = 16 * 2**20  # a compressed member (captionkit stores every member uncompressed)


def member_headers(path):
    """``{key: (shape, dtype)}`` of every member of the npz at ``path``, read from the zip's directory and each
    member's .npy header only: no array is read. A member whose declared size does not match the bytes the file
    holds for it, a compressed member over the bound, and an object array are refused here, before any allocation.
    """
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise CheckpointError(f"{path}: member {info.filename!r} is not an .npy array; not a captionkit "
                                          "checkpoint")
                key = info.filename[:-len(".npy")]
                if key in headers:
                    raise CheckpointError(f"{path}: member {key!r} appears twice; the file is crafted or corrupt")
                try:
                    with archive.open(info) as member:
                        version = np.lib.format.read_magic(member)
                        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                        if read_header is None:
                            raise CheckpointError(f"{path}: member {key!r} is an .npy array of format {version}, which "
                                                  "captionkit does not read")
                        shape, _, dtype = read_header(member, max_header_size=10000)
                        data_offset = member.tell()
                except CheckpointError:
                    raise
                except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
                    raise CheckpointError(f"{path}: member {key!r} cannot be read; the file is truncated or corrupt "
                                          f"({exc})") from exc
                if dtype.hasobject:
                    raise CheckpointError(f"{path}: member {key!r} is an object array (pickled Python objects), which "
                                          "captionkit never loads; refusing the checkpoint")
                declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if info.compress_type == zipfile.ZIP_STORED:
                    if info.file_size != data_offset + declared:
                        raise CheckpointError(
                            f"{path}: member {key!r} declares {shape} {dtype} ({declared} bytes) but holds "
                            f"{info.file_size - data_offset}; the file is crafted or corrupt")
                elif declared > MAX_INFLATED_BYTES or info.file_size != data_offset + declared:
                    raise CheckpointError(
                        f"{path}: member {key!r} is compressed and declares {declared} bytes; captionkit reads "
                        f"compressed members of at most {MAX_INFLATED_BYTES} bytes (it writes checkpoints "
                        "uncompressed)")
                headers[key] = (tuple(shape), dtype)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint; the file is truncated or corrupt ({exc})") from exc
    if headers.get("meta", ((0,), None))[0][0] > MAX_META_BYTES:
        raise CheckpointError(f"{path}: 'meta' declares {headers['meta'][0][0]} bytes, more than the "
                              f"{MAX_META_BYTES} captionkit reads")
    return headers


def read_member(path, archive, key):
    """Member ``key`` of the open ``archive`` as an array; CheckpointError naming ``path`` and ``key`` when it cannot
    be read (an object array is refused, never unpickled)."""
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc):
            raise CheckpointError(
                f"{path}: member {key!r} is an object array (pickled Python objects), which captionkit never "
                "loads; refusing the checkpoint"
            ) from exc
        raise CheckpointError(f"{path}: member {key!r} cannot be read ({exc}); the file is corrupt") from exc
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(
            f"{path}: member {key!r} cannot be read; the file is truncated or corrupt ({exc})"
        ) from exc
