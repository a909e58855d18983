"""Tests of python/pylake/_download.py against real HTTP servers on 127.0.0.1.

The module is loaded straight from its file unless pylake was already imported
normally (pylake/__init__.py needs the compiled extension; _download.py does not).

FileServer serves generated random bytes with Range/If-Range support and
switchable faults (cut the body, ignore Range, ignore If-Range, stall, force an
HTTP status, change the file). FakeHub implements the part of the Hugging Face
hub protocol that huggingface_hub.hf_hub_download uses: HEAD/GET on
/{repo}/resolve/{revision}/{file} with X-Repo-Commit, ETag / X-Linked-Etag,
X-Linked-Size, X-Error-Code, and an LFS-style redirect to another origin.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]


def _load_download_module():
    if "pylake._download" in sys.modules:
        return sys.modules["pylake._download"]
    name = "pylake_download_standalone"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _ROOT / "python" / "pylake" / "_download.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


dl = _load_download_module()

SIZE = 3 * (1 << 20) + 12345  # a few MB, not a multiple of any chunk size
CHUNK = 64 * 1024


def _bytes(seed: int, n: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(n)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "LAKE_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def _leftovers(dest: Path) -> list[str]:
    """Files next to dest that belong to its download (partial, its record, lock)."""
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(dest.name + "."))


# --------------------------------------------------------------------------- plain file server


class FileServer:
    def __init__(self, data: bytes, etag: str = '"v1"'):
        self.data = data
        self.etag = etag
        self.last_modified = "Wed, 01 Jan 2025 00:00:00 GMT"
        self.requests: list[dict] = []
        self.body_bytes_sent = 0
        self.cut_after: int | None = None  # send only this many body bytes of the next response(s), then close
        self.stall_after: int | None = None  # send this many body bytes, then stall until released
        self.ignore_range = False
        self.ignore_if_range = False
        self.force_status: int | None = None
        self.send_etag = True
        self.delay_per_chunk = 0.0
        self.got_request = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                server._serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files/model.bin"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def gets(self) -> list[dict]:
        return [r for r in self.requests if r["method"] == "GET"]

    def _serve(self, h: BaseHTTPRequestHandler):
        with self._lock:
            self.requests.append({"method": h.command, "path": h.path, "headers": dict(h.headers)})
        self.got_request.set()
        data = self.data
        if self.force_status is not None:
            h.send_response(self.force_status)
            h.send_header("Content-Length", "0")
            h.send_header("Connection", "close")
            h.end_headers()
            h.close_connection = True
            return
        rng = h.headers.get("Range")
        if_range = h.headers.get("If-Range")
        start = 0
        partial = False
        if rng and not self.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            if if_range is None or self.ignore_if_range or if_range in (self.etag, self.last_modified):
                start = int(m.group(1))
                partial = True
        if partial and start >= len(data):
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{len(data)}")
            h.send_header("Content-Length", "0")
            if self.send_etag:
                h.send_header("ETag", self.etag)
            h.end_headers()
            return
        body = data[start:]
        h.send_response(206 if partial else 200)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        if self.send_etag:
            h.send_header("ETag", self.etag)
        h.send_header("Last-Modified", self.last_modified)
        if partial:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        limit = len(body)
        if self.cut_after is not None:
            limit = min(limit, self.cut_after)
        if self.stall_after is not None:
            limit = min(limit, self.stall_after)
        try:
            for off in range(0, limit, CHUNK):
                piece = body[off:min(off + CHUNK, limit)]
                h.wfile.write(piece)
                with self._lock:
                    self.body_bytes_sent += len(piece)
                if self.delay_per_chunk:
                    self.release.wait(self.delay_per_chunk)
            h.wfile.flush()
            if self.stall_after is not None:
                self.release.wait(10)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if limit < len(body):
            h.close_connection = True  # Content-Length promised more: the client sees a short body


@pytest.fixture
def data():
    return _bytes(1)


@pytest.fixture
def server(data):
    s = FileServer(data)
    yield s
    s.close()


# --------------------------------------------------------------------------- is_offline


@pytest.mark.parametrize("value,expected", [
    ("1", True), ("true", True), ("YES", True), ("On", True), (" 1 ", True),
    ("0", False), ("", False), ("false", False), ("no", False), ("off", False),
])
@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "LAKE_OFFLINE"])
def test_is_offline(monkeypatch, var, value, expected):
    assert dl.is_offline() is False
    monkeypatch.setenv(var, value)
    assert dl.is_offline() is expected


# --------------------------------------------------------------------------- download_url


def test_good_download_then_no_request(server, data, tmp_path):
    dest = tmp_path / "sub" / "dir" / "model.bin"  # parent folders are created
    out = dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False, chunk_size=CHUNK)
    assert out == str(dest)
    assert dest.read_bytes() == data
    assert _leftovers(dest) == []
    assert len(server.gets()) == 1
    assert "Range" not in server.gets()[0]["headers"]
    # present and verified: no network at all, with or without a checksum
    dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False)
    dl.download_url(server.url, str(dest), progress=False)
    assert len(server.requests) == 1


def test_progress_bar_on_stderr_only_when_asked(server, data, tmp_path, capsys):
    pytest.importorskip("tqdm")
    dl.download_url(server.url, str(tmp_path / "a.bin"), progress=False)
    assert capsys.readouterr().err == ""
    dl.download_url(server.url, str(tmp_path / "b.bin"), progress=True)
    err = capsys.readouterr().err
    assert "b.bin" in err and "3.01M" in err, err  # the bar, with the file size
    assert (tmp_path / "b.bin").read_bytes() == data


def test_wrong_checksum(server, data, tmp_path):
    dest = tmp_path / "model.bin"
    wrong = "0" * 64
    with pytest.raises(ValueError) as ei:
        dl.download_url(server.url, str(dest), sha256=wrong, progress=False)
    msg = str(ei.value)
    assert server.url in msg and str(dest) in msg and wrong in msg and _sha(data) in msg
    assert not dest.exists()
    assert _leftovers(dest) == []


def test_bad_arguments(server, tmp_path):
    with pytest.raises(ValueError, match="64 hex"):
        dl.download_url(server.url, str(tmp_path / "x"), sha256="abc", progress=False)
    with pytest.raises(ValueError, match="only http"):
        dl.download_url("file:///etc/passwd", str(tmp_path / "x"), progress=False)
    with pytest.raises(ValueError, match="only http"):
        dl.download_url("ftp://example.com/x", str(tmp_path / "x"), progress=False)
    assert server.requests == []
    assert list(tmp_path.iterdir()) == []


def test_cut_connection_then_resume(server, data, tmp_path):
    dest = tmp_path / "model.bin"
    half = SIZE // 2
    server.cut_after = half
    with pytest.raises(RuntimeError) as ei:
        dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False, chunk_size=CHUNK)
    msg = str(ei.value)
    assert server.url in msg and f"{half} of {SIZE} bytes" in msg and "resumes" in msg, msg
    assert not dest.exists()
    part = Path(str(dest) + ".incomplete")
    assert part.read_bytes() == data[:half]

    server.cut_after = None
    sent_before = server.body_bytes_sent
    dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False, chunk_size=CHUNK)
    second = server.gets()[-1]
    assert second["headers"]["Range"] == f"bytes={half}-"
    assert second["headers"]["If-Range"] == server.etag
    assert server.body_bytes_sent - sent_before == SIZE - half  # only the remainder was transferred
    assert dest.read_bytes() == data
    assert _leftovers(dest) == []


def test_cut_twice_resumes_from_each_partial_size_without_checksum(server, data, tmp_path):
    dest = tmp_path / "model.bin"
    server.cut_after = SIZE // 3
    with pytest.raises(RuntimeError):
        dl.download_url(server.url, str(dest), progress=False, chunk_size=CHUNK)
    with pytest.raises(RuntimeError, match=f"{2 * (SIZE // 3)} of {SIZE} bytes"):
        dl.download_url(server.url, str(dest), progress=False, chunk_size=CHUNK)
    assert server.gets()[-1]["headers"]["Range"] == f"bytes={SIZE // 3}-"
    server.cut_after = None
    dl.download_url(server.url, str(dest), progress=False, chunk_size=CHUNK)
    assert server.gets()[-1]["headers"]["Range"] == f"bytes={2 * (SIZE // 3)}-"
    assert dest.read_bytes() == data
    assert _leftovers(dest) == []


def test_server_ignores_range_restarts_from_zero(server, data, tmp_path):
    dest = tmp_path / "model.bin"
    server.cut_after = SIZE // 2
    with pytest.raises(RuntimeError):
        dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False, chunk_size=CHUNK)
    server.cut_after = None
    server.ignore_range = True
    dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False, chunk_size=CHUNK)
    assert "Range" in server.gets()[-1]["headers"]
    assert dest.read_bytes() == data  # not the first half followed by the whole file
    assert _leftovers(dest) == []


@pytest.mark.parametrize("ignore_if_range", [False, True], ids=["if-range-honoured", "if-range-ignored"])
def test_remote_changed_between_attempts_is_not_spliced(server, tmp_path, ignore_if_range):
    old, new = _bytes(1), _bytes(2)
    dest = tmp_path / "model.bin"
    server.cut_after = SIZE // 2
    with pytest.raises(RuntimeError):
        dl.download_url(server.url, str(dest), progress=False, chunk_size=CHUNK)
    assert Path(str(dest) + ".incomplete").read_bytes() == old[: SIZE // 2]
    server.cut_after = None
    server.data, server.etag = new, '"v2"'
    server.last_modified = "Thu, 02 Jan 2025 00:00:00 GMT"
    server.ignore_if_range = ignore_if_range  # then the server answers 206 with the new ETag
    dl.download_url(server.url, str(dest), progress=False, chunk_size=CHUNK)  # no checksum to catch a splice
    assert dest.read_bytes() == new
    assert _leftovers(dest) == []
    gets = server.gets()
    assert gets[1]["headers"]["If-Range"] == '"v1"'
    assert len(gets) == (3 if ignore_if_range else 2)  # a refused continuation costs one fresh GET
    if ignore_if_range:
        assert "Range" not in gets[2]["headers"]


def test_changed_size_without_etag_is_not_spliced(server, tmp_path):
    """No ETag: If-Range carries Last-Modified; a server ignoring it is caught by Content-Range's total."""
    server.send_etag = False
    old = server.data
    dest = tmp_path / "model.bin"
    server.cut_after = SIZE // 2
    with pytest.raises(RuntimeError):
        dl.download_url(server.url, str(dest), progress=False, chunk_size=CHUNK)
    server.cut_after = None
    server.ignore_if_range = True
    server.data = _bytes(3, SIZE + 1000)
    dl.download_url(server.url, str(dest), progress=False, chunk_size=CHUNK)
    assert server.gets()[1]["headers"]["If-Range"] == server.last_modified
    assert dest.read_bytes() == server.data != old


def test_partial_already_complete_gets_416_and_is_verified(server, data, tmp_path):
    dest = tmp_path / "model.bin"
    server.cut_after = SIZE - 1
    with pytest.raises(RuntimeError):
        dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False, chunk_size=CHUNK)
    # complete the partial file by hand (as if the last byte arrived before a crash)
    with open(str(dest) + ".incomplete", "ab") as f:
        f.write(data[-1:])
    server.cut_after = None
    sent = server.body_bytes_sent
    dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False, chunk_size=CHUNK)
    assert server.gets()[-1]["headers"]["Range"] == f"bytes={SIZE}-"
    assert server.body_bytes_sent == sent
    assert dest.read_bytes() == data
    assert _leftovers(dest) == []


def test_resumed_download_with_corrupt_partial_fails_checksum(server, data, tmp_path):
    dest = tmp_path / "model.bin"
    server.cut_after = SIZE // 2
    with pytest.raises(RuntimeError):
        dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False, chunk_size=CHUNK)
    part = Path(str(dest) + ".incomplete")
    b = bytearray(part.read_bytes())
    b[10] ^= 0xFF
    part.write_bytes(bytes(b))
    server.cut_after = None
    with pytest.raises(ValueError, match="SHA-256"):
        dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False, chunk_size=CHUNK)
    assert not dest.exists() and _leftovers(dest) == []
    dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False, chunk_size=CHUNK)  # rerun: fresh
    assert dest.read_bytes() == data


def test_existing_dest_with_wrong_content_is_redownloaded(server, data, tmp_path):
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"not the model")
    with pytest.warns(RuntimeWarning, match="not trusted"):
        dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False)
    assert dest.read_bytes() == data
    assert len(server.gets()) == 1


def test_existing_dest_kept_when_redownload_fails_checksum(server, data, tmp_path):
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"old content")
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError):
        dl.download_url(server.url, str(dest), sha256="1" * 64, progress=False)
    assert dest.read_bytes() == b"old content"  # replaced only by a verified file
    assert _leftovers(dest) == []


def test_existing_dest_without_checksum_is_trusted(server, tmp_path):
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"whatever")
    dl.download_url(server.url, str(dest), progress=False)
    assert dest.read_bytes() == b"whatever" and server.requests == []


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "LAKE_OFFLINE"])
def test_offline(server, data, tmp_path, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    dest = tmp_path / "model.bin"
    with pytest.raises(RuntimeError) as ei:
        dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False)
    msg = str(ei.value)
    assert f"put the file with SHA-256 {_sha(data)} at {dest}" in msg and server.url in msg and var in msg
    assert server.requests == []
    assert list(tmp_path.iterdir()) == []
    # a file already there is still used offline
    dest.write_bytes(data)
    assert dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False) == str(dest)
    assert server.requests == []


def test_http_404(server, tmp_path):
    server.force_status = 404
    dest = tmp_path / "model.bin"
    with pytest.raises(RuntimeError) as ei:
        dl.download_url(server.url, str(dest), progress=False)
    msg = str(ei.value)
    assert server.url in msg and "HTTP 404" in msg and "0 bytes (of an unknown size) arrived" in msg, msg
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_http_error_while_resuming_keeps_partial(server, data, tmp_path):
    dest = tmp_path / "model.bin"
    server.cut_after = 1000 * 1000
    with pytest.raises(RuntimeError):
        dl.download_url(server.url, str(dest), progress=False, chunk_size=CHUNK)
    server.cut_after = None
    server.force_status = 503
    with pytest.raises(RuntimeError, match=r"HTTP 503.*1000000 of .*resumes from byte 1000000"):
        dl.download_url(server.url, str(dest), progress=False, chunk_size=CHUNK)
    assert Path(str(dest) + ".incomplete").stat().st_size == 1000 * 1000
    server.force_status = None
    dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False, chunk_size=CHUNK)
    assert dest.read_bytes() == data


def test_timeout_keeps_partial(server, data, tmp_path):
    dest = tmp_path / "model.bin"
    server.stall_after = 5 * CHUNK
    with pytest.raises(RuntimeError) as ei:
        dl.download_url(server.url, str(dest), progress=False, timeout=0.3, chunk_size=CHUNK)
    msg = str(ei.value)
    assert "no data for 0.3 s" in msg and f"{5 * CHUNK} of {SIZE}" in msg, msg
    assert Path(str(dest) + ".incomplete").stat().st_size == 5 * CHUNK
    assert not dest.exists()


def test_connection_refused(tmp_path):
    s = FileServer(b"x")
    url = s.url
    s.close()  # nothing listens on that port any more
    dest = tmp_path / "model.bin"
    with pytest.raises(RuntimeError, match=re.escape(url) + ".*cannot connect"):
        dl.download_url(url, str(dest), progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_downloads_share_one_transfer(server, data, tmp_path):
    dest = tmp_path / "model.bin"
    server.delay_per_chunk = 0.004  # ~0.2 s for the file: the second caller arrives mid-download
    results, errors = [], []

    def run():
        try:
            results.append(dl.download_url(server.url, str(dest), sha256=_sha(data), progress=False, chunk_size=CHUNK))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t1 = threading.Thread(target=run)
    t1.start()
    assert server.got_request.wait(10)
    t2 = threading.Thread(target=run)  # a separate open() of the lock file: flock excludes it like a process
    t2.start()
    t1.join(20)
    t2.join(20)
    assert errors == []
    assert results == [str(dest), str(dest)]
    assert len(server.gets()) == 1  # the second caller waited and found the finished file
    assert dest.read_bytes() == data
    assert _leftovers(dest) == []


def test_concurrent_downloads_from_two_processes(server, data, tmp_path):
    import subprocess

    dest = tmp_path / "model.bin"
    server.delay_per_chunk = 0.004
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('d', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(m.download_url(sys.argv[2], sys.argv[3], sha256=sys.argv[4], progress=False, chunk_size=65536))\n"
    )
    args = [str(_ROOT / "python" / "pylake" / "_download.py"), server.url, str(dest), _sha(data)]
    procs = [subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o[0].strip() for o in outs] == [str(dest)] * 2
    assert dest.read_bytes() == data
    assert len(server.gets()) == 1
    assert _leftovers(dest) == []


# --------------------------------------------------------------------------- fake hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """Minimal HF hub: HEAD/GET {endpoint}/{repo_id}/resolve/{revision}/{filename}."""

    def __init__(self):
        self.repos = {
            "org/clip": {"model.safetensors": _bytes(10, 200_000), "config.json": b'{"a": 1}'},
            "org/binonly": {"pytorch_model.bin": _bytes(11, 150_000)},
            "org/lfs": {"model.safetensors": _bytes(12, 300_000)},  # HEAD redirects to another origin
            "org/mirror": {"pytorch_model.bin": _bytes(13, 1000)},  # misses are plain 404s (no X-Error-Code)
        }
        self.gated = {"org/gated"}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._serve(self, head=True)

            def do_GET(self):
                hub._serve(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _reply(self, h, status, headers=None, body=b"", head=False):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head and body:
            h.wfile.write(body)

    def _serve(self, h, head):
        self.requests.append((h.command, h.path))
        m = re.fullmatch(r"/cdn/([0-9a-f]{64})", h.path)
        if m:  # the "CDN": content by sha256
            for files in self.repos.values():
                for content in files.values():
                    if _sha(content) == m.group(1):
                        return self._reply(h, 200, {"ETag": f'"{m.group(1)}"'}, content, head)
            return self._reply(h, 404, head=head)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", h.path)
        if not m:
            return self._reply(h, 404, head=head)
        repo, rev, filename = m.groups()
        if repo in self.gated:
            return self._reply(h, 401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"}, head=head)
        if repo not in self.repos:
            return self._reply(h, 401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "not found"}, head=head)
        if rev not in ("main", COMMIT):
            return self._reply(h, 404, {"X-Error-Code": "RevisionNotFound"}, head=head)
        files = self.repos[repo]
        if filename not in files:
            if repo == "org/mirror":
                return self._reply(h, 404, head=head)
            return self._reply(h, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}, head=head)
        content = files[filename]
        sha = _sha(content)
        if repo == "org/lfs":
            # what the hub does for LFS files: 302 to a CDN on another origin, metadata on the 302 itself
            return self._reply(h, 302, {
                "Location": f"http://localhost:{self.port}/cdn/{sha}",
                "X-Repo-Commit": COMMIT,
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(content)),
                "ETag": '"git-pointer-etag"',
            }, head=head)
        git_sha = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
        return self._reply(h, 200, {"X-Repo-Commit": COMMIT, "ETag": f'"{git_sha}"'}, content, head)


@pytest.fixture
def hub(monkeypatch):
    hh = pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # in case it was set when it was imported
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    h = FakeHub()
    h.hh = hh
    yield h
    h.close()


def _cache(tmp_path) -> str:
    return str((tmp_path / "hf-cache").resolve())


def test_hub_download_real_cache_layout(hub, tmp_path):
    cache = _cache(tmp_path)
    path = dl.hub_download("org/clip", ["model.safetensors", "pytorch_model.bin"], cache_dir=cache,
                           endpoint=hub.endpoint, progress=False)
    repo_dir = Path(cache) / "models--org--clip"
    assert path == str(repo_dir / "snapshots" / COMMIT / "model.safetensors")
    assert Path(path).read_bytes() == hub.repos["org/clip"]["model.safetensors"]
    assert (repo_dir / "refs" / "main").read_text() == COMMIT
    assert hub.hh.try_to_load_from_cache("org/clip", "model.safetensors", cache_dir=cache) == path
    assert ("GET", "/org/clip/resolve/main/model.safetensors") in hub.requests
    assert not list(repo_dir.rglob("*.incomplete"))


def test_hub_download_lfs_redirect(hub, tmp_path):
    cache = _cache(tmp_path)
    content = hub.repos["org/lfs"]["model.safetensors"]
    path = dl.hub_download("org/lfs", ["model.safetensors"], cache_dir=cache, endpoint=hub.endpoint, progress=False)
    assert Path(path).read_bytes() == content
    blob = Path(cache) / "models--org--lfs" / "blobs" / _sha(content)
    assert blob.is_file() and Path(path).resolve() == blob.resolve()
    assert ("GET", f"/cdn/{_sha(content)}") in hub.requests


def test_hub_download_falls_back_to_next_candidate(hub, tmp_path):
    cache = _cache(tmp_path)
    path = dl.hub_download("org/binonly", ["model.safetensors", "pytorch_model.bin"], cache_dir=cache,
                           endpoint=hub.endpoint, progress=False)
    assert path.endswith(os.path.join("snapshots", COMMIT, "pytorch_model.bin"))
    assert Path(path).read_bytes() == hub.repos["org/binonly"]["pytorch_model.bin"]
    assert ("HEAD", "/org/binonly/resolve/main/model.safetensors") in hub.requests
    # a mirror that answers a plain 404 (no X-Error-Code) also falls through
    path = dl.hub_download("org/mirror", ["model.safetensors", "pytorch_model.bin"], cache_dir=cache,
                           endpoint=hub.endpoint, progress=False)
    assert Path(path).read_bytes() == hub.repos["org/mirror"]["pytorch_model.bin"]


def test_hub_download_none_exist(hub, tmp_path):
    with pytest.raises(ValueError) as ei:
        dl.hub_download("org/clip", ["nope.safetensors", "nope.bin"], cache_dir=_cache(tmp_path),
                        endpoint=hub.endpoint, progress=False)
    msg = str(ei.value)
    assert "org/clip" in msg and "nope.safetensors" in msg and "nope.bin" in msg


def test_hub_download_offline(hub, tmp_path, monkeypatch):
    cache = _cache(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError) as ei:
        dl.hub_download("org/clip", ["model.safetensors", "pytorch_model.bin"], cache_dir=cache,
                        endpoint=hub.endpoint, progress=False)
    msg = str(ei.value)
    assert "org/clip" in msg and "model.safetensors" in msg and "pytorch_model.bin" in msg
    assert os.path.join(cache, "models--org--clip") in msg
    assert hub.requests == []
    # once cached, offline mode returns the cached file without any request
    monkeypatch.delenv("HF_HUB_OFFLINE")
    online = dl.hub_download("org/clip", ["model.safetensors"], cache_dir=cache, endpoint=hub.endpoint, progress=False)
    n = len(hub.requests)
    monkeypatch.setenv("LAKE_OFFLINE", "yes")
    assert dl.hub_download("org/clip", ["missing.bin", "model.safetensors"], cache_dir=cache,
                           endpoint=hub.endpoint, progress=False) == online
    assert len(hub.requests) == n


def test_hub_download_repo_errors(hub, tmp_path):
    cache = _cache(tmp_path)
    with pytest.raises(RuntimeError, match="org/absent.*not found"):
        dl.hub_download("org/absent", ["model.safetensors"], cache_dir=cache, endpoint=hub.endpoint, progress=False)
    with pytest.raises(RuntimeError, match="org/gated is gated"):
        dl.hub_download("org/gated", ["model.safetensors"], cache_dir=cache, endpoint=hub.endpoint, progress=False)
    with pytest.raises(RuntimeError, match="org/clip has no revision 'v9'"):
        dl.hub_download("org/clip", ["model.safetensors"], revision="v9", cache_dir=cache, endpoint=hub.endpoint,
                        progress=False)


def test_hub_unreachable(hub, tmp_path, monkeypatch):
    import time
    import types

    from huggingface_hub.utils import _http

    # huggingface_hub retries an unreachable hub with exponential backoff (~25 s): skip its sleeps
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(**{**vars(time), "sleep": lambda s: None}))
    endpoint = hub.endpoint
    hub.close()
    cache = _cache(tmp_path)
    with pytest.raises(RuntimeError) as ei:
        dl.hub_download("org/clip", ["model.safetensors"], cache_dir=cache, endpoint=endpoint, progress=False)
    msg = str(ei.value)
    assert "org/clip" in msg and "model.safetensors" in msg and endpoint in msg and cache in msg
