"""captionkit.fetch and `captionkit data fetch` against a local HTTP server serving zips built here."""
import dataclasses
import hashlib
import http.server
import io
import socket
import stat
import threading
import zipfile

import pytest
from click.testing import CliRunner

from captionkit import fetch as fetch_module
from captionkit.cli import main
from captionkit.data import bundle_paths
from captionkit.fetch import FetchError, fetch_bundle

TOP = fetch_module.BUNDLES["coco"].top_folder
BUNDLE_FILES = sorted(p.name for p in bundle_paths("x", layout="cs231n").values())


def make_zip(entries):
    """A zip holding ``entries``: a list of (ZipInfo or name, bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, payload in entries:
            zf.writestr(info, payload)
    return buffer.getvalue()


def bundle_entries(skip=()):
    return [(f"{TOP}/{name}", f"contents of {name}\n".encode() * 50) for name in BUNDLE_FILES if name not in skip]


def symlink_entry(name, target):
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix, so the mode bits in external_attr are read
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


class _Routes(http.server.BaseHTTPRequestHandler):
    routes = {}  # path -> (body, announced Content-Length)

    def do_GET(self):
        if self.path not in self.routes:
            self.send_error(404)
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
        _Routes.routes[path] = (body, len(body) if announced is None else announced)
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
