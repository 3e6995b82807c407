"""captionkit.atomicfile: the old import path of the atomic writers, which now live in captionkit.safeio.

Oracles: the objects themselves (the names must be safeio's, not copies), and the file system seen from inside and
after the write block.
"""
import pytest

from captionkit import atomicfile, safeio


def test_the_names_are_safeios_own():
    assert atomicfile.__all__ == ["atomic_write", "atomic_write_text"]
    assert atomicfile.atomic_write is safeio.atomic_write
    assert atomicfile.atomic_write_text is safeio.atomic_write_text


def test_a_reader_sees_the_old_content_until_the_block_ends(tmp_path):
    path = tmp_path / "record.json"
    atomicfile.atomic_write_text(path, "old")
    with atomicfile.atomic_write(path, "w") as f:
        f.write("new")
        f.flush()
        assert path.read_text() == "old"
        (temporary,) = [p for p in tmp_path.iterdir() if p != path]
        assert temporary.name.startswith(".record.json.") and temporary.name.endswith(".tmp")
    assert path.read_text() == "new" and sorted(tmp_path.iterdir()) == [path]


def test_a_failed_block_leaves_the_file_and_no_temporary(tmp_path):
    path = tmp_path / "sub" / "data.bin"  # the folder is created on the way
    atomicfile.atomic_write_text(path, "kept")
    with pytest.raises(KeyError):
        with atomicfile.atomic_write(path) as f:
            f.write(b"half")
            raise KeyError("stop")
    assert path.read_text() == "kept" and sorted(path.parent.iterdir()) == [path]
