"""captionkit.fetch and `captionkit data fetch` against a local HTTP server serving zips built here."""
import dataclasses
import hashlib
import http.server
import io
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from captionkit import fetch as fetch_module
from captionkit.cli import main
from captionkit.data import bundle_paths
from captionkit.fetch import FetchError, FetchInterrupted, fetch_bundle, parse_size
from captionkit.locking import DirectoryLock
from conftest import write_bundle

TOP = fetch_module.BUNDLES["coco"].top_folder
BUNDLE_FILES = sorted(p.name for p in bundle_paths("x", layout="cs231n").values())


def make_zip(entries):
    """A zip holding ``entries``: a list of (ZipInfo or name, bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, payload in entries:
            zf.writestr(info, payload)
    return buffer.getvalue()


def _bundle_bytes():
    """{file name: bytes} of a small valid bundle in the assignment's layout (written once per session)."""
    if not _BUNDLE_BYTES:
        with tempfile.TemporaryDirectory() as folder:
            write_bundle(folder, num_train_images=6, num_val_images=3, feature_dim=8)
            _BUNDLE_BYTES.update((name, (Path(folder) / name).read_bytes()) for name in BUNDLE_FILES)
    return _BUNDLE_BYTES


_BUNDLE_BYTES = {}


def bundle_entries(skip=(), replace=None):
    """Zip entries of a valid bundle under TOP/, without the files in ``skip``, with ``replace``'s {name: bytes}."""
    files = {**_bundle_bytes(), **(replace or {})}
    return [(f"{TOP}/{name}", files[name]) for name in BUNDLE_FILES if name not in skip]


def symlink_entry(name, target):
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix, so the mode bits in external_attr are read
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


class _Routes(http.server.BaseHTTPRequestHandler):
    routes = {}  # path -> (body, announced Content-Length), or a function(handler) that answers by itself

    def do_GET(self):
        if self.path not in self.routes:
            self.send_error(404)
            return
        if callable(self.routes[self.path]):
            try:
                self.routes[self.path](self)
            except OSError:  # the client went away: what these servers wait for
                pass
            return
        body, announced = self.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(announced))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    """Serve registered bodies on 127.0.0.1; ``serve(path, body, announced=None)`` returns the URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Routes)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def serve(path, body, announced=None):
        """``body``: bytes, or a function(handler) that writes the whole answer itself."""
        _Routes.routes[path] = body if callable(body) else (body, len(body) if announced is None else announced)
        return f"http://127.0.0.1:{httpd.server_address[1]}{path}"

    yield serve
    httpd.shutdown()
    httpd.server_close()


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/coco_captioning.zip"


def assert_nothing_left(parent, target):
    """No target directory and no staging folder or partial download beside it."""
    assert not target.exists()
    assert list(parent.iterdir()) == []


def test_fetch_unpacks_bundle_and_reports_progress(server, tmp_path):
    archive = make_zip(bundle_entries())
    url = server("/ok.zip", archive)
    calls = []
    target = tmp_path / "data" / "coco"
    result = fetch_bundle("coco", target, url=url, progress=lambda done, total: calls.append((done, total)))

    assert result.directory == target
    assert sorted(p.name for p in target.iterdir()) == BUNDLE_FILES
    assert (target / "coco2014_vocab.json").read_bytes() == dict(bundle_entries())[f"{TOP}/coco2014_vocab.json"]
    assert result.size == len(archive) and result.sha256 == hashlib.sha256(archive).hexdigest()
    assert result.checksum_verified is False  # the table records no checksum for coco yet
    assert calls[-1] == (len(archive), len(archive))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert sorted(p.name for p in target.parent.iterdir()) == ["coco"]  # staging folder removed


def test_fetch_with_right_sha256_verifies_and_fills_an_empty_directory(server, tmp_path):
    archive = make_zip(bundle_entries())
    target = tmp_path / "coco"
    target.mkdir()
    result = fetch_bundle("coco", target, url=server("/ok2.zip", archive),
                          sha256=hashlib.sha256(archive).hexdigest().upper())
    assert result.checksum_verified is True
    assert sorted(p.name for p in target.iterdir()) == BUNDLE_FILES


def test_checksum_mismatch_unpacks_nothing(server, tmp_path):
    url = server("/bad-sum.zip", make_zip(bundle_entries()))
    with pytest.raises(FetchError, match="SHA-256 mismatch"):
        fetch_bundle("coco", tmp_path / "coco", url=url, sha256="0" * 64)
    assert_nothing_left(tmp_path, tmp_path / "coco")


@pytest.mark.parametrize("field, wrong, message", [
    ("sha256", "f" * 64, "SHA-256 mismatch"),
    ("size", 12345, "announces .* bytes, expected 12345"),
])
def test_recorded_values_in_the_bundle_table_are_enforced(server, tmp_path, monkeypatch, field, wrong, message):
    url = server("/table.zip", make_zip(bundle_entries()))
    source = dataclasses.replace(fetch_module.BUNDLES["coco"], url=url, **{field: wrong})
    monkeypatch.setitem(fetch_module.BUNDLES, "coco", source)
    with pytest.raises(FetchError, match=message):
        fetch_bundle("coco", tmp_path / "coco")
    assert_nothing_left(tmp_path, tmp_path / "coco")


def test_truncated_download_is_refused(server, tmp_path):
    archive = make_zip(bundle_entries())
    url = server("/short.zip", archive[: len(archive) // 2], announced=len(archive))
    with pytest.raises(FetchError, match=f"truncated: got {len(archive) // 2} of {len(archive)} bytes"):
        fetch_bundle("coco", tmp_path / "coco", url=url)
    assert_nothing_left(tmp_path, tmp_path / "coco")


def test_cut_archive_served_whole_is_not_a_valid_zip(server, tmp_path):
    archive = make_zip(bundle_entries())
    url = server("/cut.zip", archive[: len(archive) - 40])
    with pytest.raises(FetchError, match="not a valid or complete zip archive"):
        fetch_bundle("coco", tmp_path / "coco", url=url)
    assert_nothing_left(tmp_path, tmp_path / "coco")


@pytest.mark.parametrize("entry, message", [
    ((zipfile.ZipInfo("/tmp/captionkit-zip-slip.txt"), b"x"), "absolute path"),
    ((zipfile.ZipInfo("C:/captionkit-zip-slip.txt"), b"x"), "absolute path"),
    ((f"{TOP}/../../captionkit-zip-slip.txt", b"x"), "'..' component"),
    ((f"{TOP}\\..\\..\\captionkit-zip-slip.txt", b"x"), "'..' component"),
    (symlink_entry(f"{TOP}/escape", "../../.."), "symbolic link"),
    (symlink_entry(f"{TOP}/passwd", "/etc/passwd"), "symbolic link"),
])
def test_zip_slip_entries_are_refused_before_anything_is_written(server, tmp_path, entry, message):
    parent = tmp_path / "parent"
    parent.mkdir()
    url = server(f"/{tmp_path.name}.zip", make_zip(bundle_entries() + [entry]))
    with pytest.raises(FetchError, match=message):
        fetch_bundle("coco", parent / "coco", url=url)
    assert_nothing_left(parent, parent / "coco")
    assert list(tmp_path.iterdir()) == [parent]


@pytest.mark.parametrize("entries, message", [
    (bundle_entries(skip=("coco2014_vocab.json", "val2014_urls.txt")),
     "lacks bundle files: coco2014_vocab.json, val2014_urls.txt"),
    ([(name.replace(f"{TOP}/", "other/"), data) for name, data in bundle_entries()], f"no top folder {TOP}/"),
])
def test_incomplete_bundle_is_refused(server, tmp_path, entries, message):
    url = server(f"/{tmp_path.name}.zip", make_zip(entries))
    with pytest.raises(FetchError, match=message):
        fetch_bundle("coco", tmp_path / "coco", url=url)
    assert_nothing_left(tmp_path, tmp_path / "coco")


@pytest.mark.parametrize("name, damage, message", [
    ("train2014_vgg16_fc7_pca.h5", lambda data: data[: len(data) // 3],
     r"train2014_vgg16_fc7_pca\.h5: cannot read HDF5 file"),
    ("coco2014_vocab.json", lambda data: b'{"idx_to_word": [',
     r"coco2014_vocab\.json: not a readable JSON vocabulary"),
    ("val2014_urls.txt", lambda data: b"http://example.org/only-one.jpg\n",
     r"val2014_urls\.txt: 1 URLs for the 3 images"),
])
def test_bundle_with_a_corrupt_file_is_refused(server, tmp_path, name, damage, message):
    entries = bundle_entries(replace={name: damage(_bundle_bytes()[name])})
    url = server(f"/{tmp_path.name}.zip", make_zip(entries))
    with pytest.raises(FetchError, match=rf"the archive's {TOP}/ is not a readable bundle: .*{message}"):
        fetch_bundle("coco", tmp_path / "coco", url=url)
    assert_nothing_left(tmp_path, tmp_path / "coco")


def test_unreachable_server_gives_a_clear_error(tmp_path):
    url = closed_port_url()
    with pytest.raises(FetchError, match=rf"could not reach {url}: .*refused.*\(are you offline\?\)"):
        fetch_bundle("coco", tmp_path / "coco", url=url, timeout=5)
    assert_nothing_left(tmp_path, tmp_path / "coco")


def test_silent_server_times_out(tmp_path):
    with socket.socket() as listener:  # accepts connections in the kernel, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/coco_captioning.zip"
        with pytest.raises(FetchError, match=rf"could not reach {url}: .*timed out"):
            fetch_bundle("coco", tmp_path / "coco", url=url, timeout=0.3)
    assert_nothing_left(tmp_path, tmp_path / "coco")


def test_http_error_status_is_reported(server, tmp_path):
    url = server("/exists.zip", b"").replace("/exists.zip", "/missing.zip")
    with pytest.raises(FetchError, match="answered HTTP 404"):
        fetch_bundle("coco", tmp_path / "coco", url=url)


def test_file_url_fetches_a_local_copy(tmp_path):
    local = tmp_path / "coco_captioning.zip"
    local.write_bytes(make_zip(bundle_entries()))
    result = fetch_bundle("coco", tmp_path / "coco", url=local.as_uri())
    assert sorted(p.name for p in result.directory.iterdir()) == BUNDLE_FILES


def test_non_empty_target_is_left_alone(server, tmp_path):
    target = tmp_path / "coco"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    with pytest.raises(FetchError, match="already exists and is not an empty directory"):
        fetch_bundle("coco", target, url=server("/ok3.zip", make_zip(bundle_entries())))
    assert [p.name for p in target.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("kwargs, message", [
    ({"sha256": "abc"}, "64 hexadecimal digits"),
    ({"url": "ftp://example.invalid/x.zip"}, "unsupported URL"),
    ({"timeout": float("nan")}, "timeout must be a finite number > 0, got nan"),
    ({"timeout": 0}, "timeout must be a finite number > 0, got 0"),
    ({"deadline": float("inf")}, "deadline must be a finite number > 0 or None, got inf"),
    ({"deadline": -1}, "deadline must be a finite number > 0 or None, got -1"),
])
def test_malformed_arguments_raise_value_error(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fetch_bundle("coco", tmp_path / "coco", **kwargs)


def test_cli_fetch_success(server, tmp_path):
    archive = make_zip(bundle_entries())
    url = server("/cli.zip", archive)
    result = CliRunner().invoke(main, ["data", "fetch", "coco", str(tmp_path / "coco"), "--url", url])
    assert result.exit_code == 0, result.output
    assert f"fetched coco into {tmp_path / 'coco'} ({len(archive)} bytes" in result.output
    assert "no recorded SHA-256" in result.stderr
    assert sorted(p.name for p in (tmp_path / "coco").iterdir()) == BUNDLE_FILES


def test_cli_fetch_offline_fails_cleanly(tmp_path):
    url = closed_port_url()
    result = CliRunner().invoke(main, ["data", "fetch", "coco", str(tmp_path / "coco"), "--url", url])
    assert result.exit_code == 1
    assert f"Error: could not reach {url}" in result.output and "(are you offline?)" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert_nothing_left(tmp_path, tmp_path / "coco")


def test_cli_fetch_checksum_mismatch_fails_cleanly(server, tmp_path):
    url = server("/cli-bad.zip", make_zip(bundle_entries()))
    result = CliRunner().invoke(main, ["data", "fetch", "coco", str(tmp_path / "coco"), "--url", url,
                                       "--sha256", "1" * 64])
    assert result.exit_code == 1 and "SHA-256 mismatch" in result.output
    assert_nothing_left(tmp_path, tmp_path / "coco")


# --- Limits: size, deadline, broken connections ------------------------------------------------------------------

def _headers(handler, length=None):
    handler.send_response(200)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.send_header("Connection", "close")
    handler.end_headers()


def endless_fast(handler):
    """No Content-Length and no end: 64 KiB blocks as fast as the client takes them."""
    _headers(handler)
    block = b"z" * 65536
    while True:
        handler.wfile.write(block)


def endless_trickle(handler):
    """A valid answer whose body comes one byte every 0.2 s, for ever."""
    _headers(handler, length=10 ** 9)
    while True:
        handler.wfile.write(b"z")
        time.sleep(0.2)


def header_trickle(handler):
    """Even the status line and headers come one byte every 0.2 s: a per-read timeout never fires."""
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\nX-Padding: " + b"p" * 10 ** 6:
        handler.wfile.write(bytes([byte]))
        time.sleep(0.2)


def slow_large(handler):
    """Announces 1 GB and sends 64 KiB every 0.05 s: a download that takes long enough to be interrupted."""
    _headers(handler, length=10 ** 9)
    block = b"z" * 65536
    while True:
        handler.wfile.write(block)
        time.sleep(0.05)


def dies_midway(handler):
    """Announces 1,000,000 bytes, sends 100,000 and drops the connection (a server process killed mid-transfer)."""
    _headers(handler, length=1_000_000)
    handler.wfile.write(b"z" * 100_000)
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    handler.connection.close()  # with SO_LINGER 0: a reset, not an orderly end


def test_endless_download_is_cut_at_max_size_and_leaves_nothing(server, tmp_path):
    url = server("/endless-fast.zip", endless_fast)
    target = tmp_path / "new" / "parents" / "coco"  # folders the fetch creates go too
    started = time.monotonic()
    with pytest.raises(FetchError, match=rf"{url}: server sent more than the limit of 1048576 bytes \(--max-size\)"):
        fetch_bundle("coco", target, url=url, max_size=1024 ** 2)
    assert time.monotonic() - started < 5
    assert list(tmp_path.iterdir()) == []


def test_announced_size_beyond_max_size_is_refused_before_downloading(server, tmp_path):
    url = server("/announced-big.zip", b"z" * 1000, announced=10 ** 12)
    with pytest.raises(FetchError, match=rf"{url}: server announces {10 ** 12} bytes, more than the limit of 1000 "
                                         r"bytes \(--max-size\); nothing was downloaded"):
        fetch_bundle("coco", tmp_path / "coco", url=url, max_size=1000)
    assert_nothing_left(tmp_path, tmp_path / "coco")


@pytest.mark.slow
@pytest.mark.parametrize("route", [endless_trickle, header_trickle], ids=["body", "headers"])
def test_trickling_server_is_cut_off_at_the_deadline(server, tmp_path, route):
    url = server(f"/trickle-{route.__name__}.zip", route)
    started = time.monotonic()
    with pytest.raises(FetchError, match=rf"download of {url} did not finish within its deadline of 1.5 s "
                                         r"\(--max-time\): \d+ bytes received") as caught:
        fetch_bundle("coco", tmp_path / "coco", url=url, deadline=1.5, timeout=60)
    elapsed = time.monotonic() - started
    assert 1.4 < elapsed < 3, elapsed
    assert "\n" not in str(caught.value)
    assert_nothing_left(tmp_path, tmp_path / "coco")


@pytest.mark.slow
def test_trickling_tls_handshake_is_cut_off_at_the_deadline(tmp_path):
    """An https server that answers the TLS hello with a record header and then one byte every 0.2 s."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/coco_captioning.zip"

        def trickle_handshake():
            connection, _ = listener.accept()
            with connection:
                connection.recv(4096)  # the client hello
                connection.sendall(bytes([22, 3, 3, 0x40, 0x00]))  # a handshake record of 16384 bytes follows...
                try:
                    while True:
                        connection.sendall(b"\0")  # ...one byte at a time
                        time.sleep(0.2)
                except OSError:  # the client gave up: what this server waits for
                    pass

        threading.Thread(target=trickle_handshake, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(FetchError, match=rf"download of {url} did not finish within its deadline of 1.5 s "
                                             r"\(--max-time\): 0 bytes received"):
            fetch_bundle("coco", tmp_path / "coco", url=url, deadline=1.5, timeout=60)
        assert 1.4 < time.monotonic() - started < 3
    assert_nothing_left(tmp_path, tmp_path / "coco")


def test_server_dying_mid_transfer_gives_a_clear_error(server, tmp_path):
    url = server("/dies.zip", dies_midway)
    with pytest.raises(FetchError, match=rf"download of {url} (is truncated: got \d+ of 1000000 bytes|broke off "
                                         r"after \d+ bytes)"):
        fetch_bundle("coco", tmp_path / "coco", url=url)
    assert_nothing_left(tmp_path, tmp_path / "coco")


@pytest.mark.parametrize("text, size", [("123", 123), ("1K", 1024), ("1.5MiB", 3 * 1024 ** 2 // 2),
                                        ("2 GB", 2 * 10 ** 9), ("16GiB", fetch_module.MAX_BYTES)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "12XB", "-5", "0", "1e9", "M"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_cli_fetch_max_size_and_max_time(server, tmp_path):
    url = server("/cli-endless.zip", endless_fast)
    result = CliRunner().invoke(main, ["data", "fetch", "coco", str(tmp_path / "coco"), "--url", url,
                                       "--max-size", "1M", "--max-time", "30"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: {url}: server sent more than the limit of 1048576 bytes (--max-size); aborted"]
    assert_nothing_left(tmp_path, tmp_path / "coco")

    result = CliRunner().invoke(main, ["data", "fetch", "coco", str(tmp_path / "coco"), "--url", url,
                                       "--max-size", "lots"])
    assert result.exit_code == 2 and "--max-size" in result.stderr and "not a size" in result.stderr


# --- Duplicate entries -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("duplicate", [
    f"{TOP}/coco2014_vocab.json",
    f"{TOP}\\coco2014_vocab.json",
    f"{TOP}//coco2014_vocab.json",
    f"./{TOP}/coco2014_vocab.json",
])
def test_duplicate_entries_are_refused_before_anything_is_unpacked(server, tmp_path, duplicate):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name" warning: the duplicate is the point
        archive = make_zip(bundle_entries() + [(duplicate, b'{"evil": true}')])
    url = server(f"/{tmp_path.name}.zip", archive)
    with pytest.raises(FetchError, match=rf"refusing to unpack: entries '{TOP}/coco2014_vocab.json' and "
                                         rf"{duplicate!r} both unpack to '{TOP}/coco2014_vocab.json'".replace("\\\\",
                                                                                                           "\\\\\\\\")):
        fetch_bundle("coco", tmp_path / "coco", url=url)
    assert_nothing_left(tmp_path, tmp_path / "coco")


def test_entries_differing_only_in_letter_case_are_refused(server, tmp_path):
    """One file on macOS and Windows filesystems, so refused everywhere: which one survives would depend on the OS."""
    archive = make_zip(bundle_entries() + [(f"{TOP}/COCO2014_Vocab.json", b'{"evil": true}')])
    url = server(f"/{tmp_path.name}.zip", archive)
    with pytest.raises(FetchError, match=rf"refusing to unpack: entries '{TOP}/coco2014_vocab.json' and "
                                         rf"'{TOP}/COCO2014_Vocab.json' differ only in letter case, one file on "
                                         rf"case-insensitive filesystems, at '{TOP}/coco2014_vocab.json'"):
        fetch_bundle("coco", tmp_path / "coco", url=url)
    assert_nothing_left(tmp_path, tmp_path / "coco")


# --- Interruptions: SIGTERM cleans up, SIGKILL's leftovers are removed by the next fetch ---------------------------

def start_cli_fetch(url, target):
    """`captionkit data fetch coco TARGET --url URL` as a real process (so that it can be signalled)."""
    repo = Path(fetch_module.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    code = "from captionkit.cli import main; main(prog_name='captionkit')"
    return subprocess.Popen([sys.executable, "-c", code, "data", "fetch", "coco", str(target), "--url", url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)


def wait_for_partial_download(process, parent, target_name, timeout=15):
    """The staging folder of a running fetch, once its archive.zip holds some bytes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert process.poll() is None, process.communicate()
        for archive in parent.glob(f".{target_name}.fetch-*/archive.zip"):
            if archive.stat().st_size > 0:
                return archive.parent
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"no partial download appeared: {process.communicate()}")


def folder_bytes(folder):
    """Bytes of the files in ``folder``, its lock file aside."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != ".fetch.lock")


@pytest.mark.slow
def test_sigterm_during_cli_fetch_removes_the_partial_download(server, tmp_path):
    url = server("/slow-sigterm.zip", slow_large)
    parent = tmp_path / "parent"
    process = start_cli_fetch(url, parent / "coco")
    try:
        wait_for_partial_download(process, parent, "coco")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["interrupted by SIGTERM; nothing was kept"]
    assert list(tmp_path.iterdir()) == []  # not even the parent folder, which the fetch had created


@pytest.mark.slow
def test_sigterm_in_process_raises_fetch_interrupted_and_restores_the_handler(server, tmp_path):
    url = server("/slow-sigterm-lib.zip", slow_large)
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        def progress(done, total):
            if done >= 256 * 1024 and not received:
                os.kill(os.getpid(), signal.SIGTERM)

        with pytest.raises(FetchInterrupted, match="^interrupted by SIGTERM; nothing was kept$") as caught:
            fetch_bundle("coco", tmp_path / "coco", url=url, progress=progress)
        assert caught.value.signum == signal.SIGTERM
        assert received == []  # fetch_bundle's handler, not ours, took it
        os.kill(os.getpid(), signal.SIGTERM)  # ours is back
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert_nothing_left(tmp_path, tmp_path / "coco")


@pytest.mark.slow
def test_sigkill_leftovers_are_removed_by_the_next_fetch_but_live_ones_are_not(server, tmp_path):
    parent = tmp_path / "parent"
    process = start_cli_fetch(server("/slow-sigkill.zip", slow_large), parent / "coco")
    try:
        stale = wait_for_partial_download(process, parent, "coco")
        process.kill()
        process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    assert (stale / "archive.zip").is_file()  # SIGKILL gives no chance to clean up: the next fetch must
    stale_bytes = folder_bytes(stale)
    old = parent / ".coco.fetch-old"  # left by a fetch killed before it locked its folder (or by an older captionkit)
    old.mkdir()
    (old / "archive.zip").write_bytes(b"z" * 1000)
    live = parent / ".coco.fetch-live"  # a concurrent fetch's folder: its lock is held
    live.mkdir()
    other = parent / ".other.fetch-x"  # another target's: not this fetch's business
    other.mkdir()

    reported = []
    archive = make_zip(bundle_entries())
    with DirectoryLock(live, name=".fetch.lock", what="download"):
        result = fetch_bundle("coco", parent / "coco", url=server("/after-kill.zip", archive),
                              on_removed=lambda folder, size: reported.append((folder, size)))
        assert live.is_dir()
    assert sorted(result.removed) == sorted(reported) == sorted([(stale, stale_bytes), (old, 1000)])
    assert sorted(p.name for p in parent.iterdir()) == sorted(["coco", live.name, other.name])
    assert sorted(p.name for p in (parent / "coco").iterdir()) == BUNDLE_FILES


@pytest.mark.slow
def test_cli_reports_removed_partial_downloads(server, tmp_path):
    stale = tmp_path / ".coco.fetch-stale"
    stale.mkdir()
    (stale / "archive.zip").write_bytes(b"z" * 4321)
    url = server("/cli-after-kill.zip", make_zip(bundle_entries()))
    result = CliRunner().invoke(main, ["data", "fetch", "coco", str(tmp_path / "coco"), "--url", url])
    assert result.exit_code == 0, result.output
    assert f"removed a partial download left by an earlier fetch: {stale} (4321 bytes)" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"]


@pytest.mark.slow
def test_fetch_from_another_thread_works_without_a_signal_handler(server, tmp_path):
    url = server("/thread.zip", make_zip(bundle_entries()))
    before = signal.getsignal(signal.SIGTERM)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(fetch_bundle("coco", tmp_path / "coco", url=url)))
    thread.start()
    thread.join(timeout=30)
    assert outcome and sorted(p.name for p in outcome[0].directory.iterdir()) == BUNDLE_FILES
    assert signal.getsignal(signal.SIGTERM) is before
