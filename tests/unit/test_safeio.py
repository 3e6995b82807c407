"""captionkit.safeio: bounded reading of regular files, JSON errors naming the file, atomic replacement."""
import json
import os
import threading

import h5py
import numpy as np
import pytest

from captionkit.comparison import read_run
from captionkit.runs import RunDirectory
from captionkit.safeio import (TEMPORARY_NAME, atomic_write, atomic_write_text, check_format, hdf5_errors, parse_json,
                               read_bounded, read_json, size_text, staged_directory, temporary_path)

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


class Refused(ValueError):
    pass


def test_size_text():
    assert [size_text(n) for n in (512, 2048, 3 * 2**20 + 2**19, 2**32)] == ["512 bytes", "2.0 KiB", "3.5 MiB",
                                                                            "4.0 GiB"]


def test_read_bounded_reads_up_to_the_limit(tmp_path):
    path = tmp_path / "f.json"
    path.write_bytes(b"x" * 10)
    assert read_bounded(path, 10, "test file") == b"x" * 10
    with pytest.raises(Refused, match=r"f\.json: a test file is at most 9 bytes \(9 bytes\); this one has 10$"):
        read_bounded(path, 9, "test file", Refused)
    with pytest.raises(Refused, match=r"missing\.json: file not found"):
        read_bounded(tmp_path / "missing.json", 9, "test file", Refused)
    with pytest.raises(Refused, match=rf"{tmp_path.name}: is a directory; an index file is read only from a regular"):
        read_bounded(tmp_path, 9, "index file", Refused)


@pytest.mark.slow
@needs_fifo
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    path = tmp_path / "pipe.json"
    os.mkfifo(path)
    result = {}

    def read():
        try:
            read_json(path, 100, "summary", Refused)
        except Refused as exc:
            result["error"] = str(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert result["error"] == f"{path}: is a FIFO; a summary file is read only from a regular file"


def test_parse_json_names_the_source():
    assert parse_json(b'{"a": [1]}', "s", "thing") == {"a": [1]}
    with pytest.raises(Refused, match=r"^s: not a readable JSON thing \(nested too deeply\)$"):
        parse_json(b"[" * 100_000, "s", "thing", Refused)
    with pytest.raises(Refused, match=r"^s: not a readable JSON thing \(Expecting value"):
        parse_json(b"{\"a\": ", "s", "thing", Refused)
    with pytest.raises(Refused, match=r"^s: not a readable JSON thing \('utf-8' codec"):
        parse_json(b"\xff", "s", "thing", Refused)


def test_check_format():
    check_format({"format": "f", "format_version": 2}, "s", "f", 2, "thing")
    with pytest.raises(Refused, match=r's: not a captionkit thing \(no "format": "f"\)'):
        check_format([], "s", "f", 2, "thing", Refused)
    with pytest.raises(Refused, match=r"s: thing format_version 3; this captionkit reads version 2"):
        check_format({"format": "f", "format_version": 3}, "s", "f", 2, "thing", Refused)


def test_hdf5_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.h5"
    path.write_bytes(b"not hdf5")
    with pytest.raises(Refused, match=r"bad\.h5: cannot read HDF5 file \("):
        with hdf5_errors(path, Refused):
            h5py.File(path, "r")
    with pytest.raises(Refused, match="^mine$"):  # the caller's own error passes through unchanged
        with hdf5_errors(path, Refused):
            raise Refused("mine")
    with pytest.raises(ZeroDivisionError):
        with hdf5_errors(path, Refused):
            1 / 0


def test_temporary_names_are_recognised_and_distinct(tmp_path):
    names = {temporary_path(tmp_path / "summary.json").name for _ in range(20)}
    assert len(names) == 20
    assert all(TEMPORARY_NAME.match(n) and n.startswith(".summary.json.") for n in names)
    assert not TEMPORARY_NAME.match("notes.tmp")


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "one")
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as f:
            f.write("two")
            raise RuntimeError
    assert path.read_text() == "one" and sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]
    with atomic_write(path) as f:
        f.write(np.arange(3, dtype=np.uint8).tobytes())
    assert path.read_bytes() == b"\x00\x01\x02"
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"):
        with atomic_write(path, "a"):
            pass


def test_staged_directory_appears_only_when_complete(tmp_path):
    target = tmp_path / "bundle"
    with pytest.raises(RuntimeError):
        with staged_directory(target) as staging:
            (staging / "x").write_text("1")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with staged_directory(target) as staging:
        assert TEMPORARY_NAME.match(staging.name)
        (staging / "x").write_text("1")
    assert (target / "x").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    with pytest.raises(FileExistsError, match="already exists and is not an empty directory"):
        with staged_directory(target):
            pass


def test_run_records_read_only_regular_files_of_bounded_size(tmp_path):
    run = RunDirectory(tmp_path)
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"best": 1.5}))
    assert run.read_json(summary) == {"best": 1.5}
    with open(summary, "r+b") as f:
        f.truncate(16 * 2**20 + 1)  # sparse: nothing is written
    assert run.read_json(summary) == {}
    summary.write_text("[1, 2]")
    assert run.read_json(summary) == {}


@pytest.mark.slow
@needs_fifo
def test_a_fifo_in_place_of_a_run_record_reads_as_missing(tmp_path):
    summary = tmp_path / "summary.json"
    os.mkfifo(summary)
    result = {}
    reader = threading.Thread(target=lambda: result.update(value=RunDirectory(tmp_path).read_json(summary)),
                              daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO at summary.json blocked"
    assert result["value"] == {}


@pytest.mark.slow
@needs_fifo
def test_compare_reads_a_run_with_a_fifo_at_summary_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"cell_type": "rnn"}))
    os.mkfifo(tmp_path / "summary.json")
    result = {}
    reader = threading.Thread(target=lambda: result.update(report=read_run(tmp_path)), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "compare blocked on a FIFO at summary.json"
    assert result["report"].config == {"cell_type": "rnn"} and result["report"].summary == {}
