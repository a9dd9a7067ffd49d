"""Download + MD5 against local HTTP servers on 127.0.0.1 (no internet; every socket times out).

After every failure the data root must hold nothing: no partial file, no wrong file.
"""

import contextlib
import functools
import hashlib
import http.server
import pathlib
import socket
import threading
from collections.abc import Iterator

import pytest

from ssljax.data import download, registry

NAME = "breastmnist"
FILE = "breastmnist.npz"
MD5 = registry.get_info(NAME).md5[28]
TIMEOUT = 5.0


@pytest.fixture(autouse=True)
def no_packaged_copy(monkeypatch, tmp_path_factory):
    """The download path is under test: no copy shipped with ssljax stands in for the file
    (tests/test_data_sample.py tests that copy)."""
    monkeypatch.setattr(download, "SAMPLE_DIR", tmp_path_factory.mktemp("no_sample"))


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Runs `handler` on an ephemeral 127.0.0.1 port; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    timeout = TIMEOUT

    def log_message(self, *args):
        pass


def directory_server(directory: pathlib.Path):
    return serving(functools.partial(_Quiet, directory=str(directory)))


def broken_server(data: bytes, send: int, stall: threading.Event | None = None):
    """Announces len(data) bytes, sends `send` of them, then stalls or closes the socket."""

    class Handler(_Quiet):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:send])
            self.wfile.flush()
            if stall is not None:
                stall.wait(TIMEOUT)
            self.close_connection = True

    return serving(Handler)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_tells_what_to_do(message: str, url: str, dest: pathlib.Path) -> None:
    for part in (url, MD5, str(dest), "SSLJAX_DATA_DIR", "config.data.root"):
        assert part in message, (part, message)


def test_download_success_and_reuse(data_dir, tmp_path):
    root = tmp_path / "root"
    with directory_server(data_dir) as base:
        path = download.ensure_file(
            NAME, 28, root, download=True, progress=False, url=f"{base}/{FILE}?download=1"
        )
    assert path == root / FILE
    assert path.read_bytes() == (data_dir / FILE).read_bytes()
    assert download.md5sum(path) == MD5
    assert sorted(p.name for p in root.iterdir()) == [FILE]
    # The server is gone: a second call must find the file instead of downloading.
    url = f"http://127.0.0.1:{closed_port()}/{FILE}"
    assert download.ensure_file(NAME, 28, root, download=True, url=url) == path


def test_md5_mismatch_leaves_nothing(data_dir, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    corrupt = bytearray((data_dir / FILE).read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    (served / FILE).write_bytes(corrupt)
    root = tmp_path / "root"
    with directory_server(served) as base:
        url = f"{base}/{FILE}"
        with pytest.raises(download.DatasetDownloadError, match="expected " + MD5) as e:
            download.ensure_file(NAME, 28, root, download=True, progress=False, url=url)
    assert hashlib.md5(corrupt).hexdigest() in str(e.value)
    assert_tells_what_to_do(str(e.value), url, root / FILE)
    assert list(root.iterdir()) == []


def test_connection_dropped_mid_file_leaves_nothing(data_dir, tmp_path):
    data = (data_dir / FILE).read_bytes()
    root = tmp_path / "root"
    with broken_server(data, send=len(data) // 2) as base:
        url = f"{base}/{FILE}"
        with pytest.raises(download.DatasetDownloadError, match="connection dropped") as e:
            download.ensure_file(NAME, 28, root, download=True, progress=False, url=url)
    assert f"after {len(data) // 2} of {len(data)} bytes" in str(e.value)
    assert_tells_what_to_do(str(e.value), url, root / FILE)
    assert list(root.iterdir()) == []


def test_stalled_server_times_out_and_leaves_nothing(data_dir, tmp_path):
    data = (data_dir / FILE).read_bytes()
    root = tmp_path / "root"
    release = threading.Event()
    with broken_server(data, send=1000, stall=release) as base:
        try:
            with pytest.raises(download.DatasetDownloadError, match="could not download"):
                download.download_file(f"{base}/{FILE}", root / FILE, MD5, False, timeout=0.3)
        finally:
            release.set()
    assert list(root.iterdir()) == []


def test_unreachable_server_gives_offline_error(tmp_path):
    root = tmp_path / "root"
    url = f"http://127.0.0.1:{closed_port()}/{FILE}?download=1"
    with pytest.raises(download.DatasetDownloadError, match="offline") as e:
        download.ensure_file(
            NAME, 28, root, download=True, progress=False, url=url, timeout=TIMEOUT
        )
    assert_tells_what_to_do(str(e.value), url, root / FILE)
    assert list(root.iterdir()) == []


def test_missing_file_without_download_names_the_zenodo_url(tmp_path):
    with pytest.raises(download.DatasetDownloadError, match="data.download is false") as e:
        download.ensure_file(NAME, 64, tmp_path, download=False)
    url = registry.get_info(NAME).urls[64]
    assert url.startswith("https://zenodo.org/")
    for part in (url, registry.get_info(NAME).md5[64], str(tmp_path / "breastmnist_64.npz")):
        assert part in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_returned_without_network(data_dir):
    assert download.ensure_file(NAME, 64, data_dir, download=False) == data_dir / (
        "breastmnist_64.npz"
    )


def test_root_tilde_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "medmnist").mkdir()
    # An existing file is trusted without hashing; load_npz validates its contents.
    (tmp_path / "medmnist" / FILE).write_bytes(b"placeholder")
    assert download.ensure_file(NAME, 28, "~/medmnist", download=False) == (
        tmp_path / "medmnist" / FILE
    )


def test_unwritable_root_is_a_clear_error(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    root = tmp_path / "a_file" / "medmnist"
    url = f"http://127.0.0.1:{closed_port()}/{FILE}"
    with pytest.raises(download.DatasetDownloadError, match="cannot write to the data root"):
        download.ensure_file(NAME, 28, root, download=True, url=url)


def test_unknown_dataset_and_size(tmp_path):
    with pytest.raises(ValueError, match="valid names"):
        download.ensure_file("nosuchmnist", 28, tmp_path, download=False)
    with pytest.raises(ValueError, match=r"data\.size=100"):
        download.ensure_file(NAME, 100, tmp_path, download=False)
