"""Downloading model files: plain http(s) URLs and Hugging Face hub repos.

``download_url`` fetches one URL with the standard library only (urllib):

* ``dest`` never exists unless it is complete and, when ``sha256`` is given,
  verified: bytes go to ``<dest>.incomplete`` and are fsynced and
  ``os.replace``d into place at the end. (Not LAKE's one atomic writer,
  ``_C.write_file_atomically``, on purpose: that one writes bytes in memory and
  removes its temporary file on failure, while this partial file is streamed,
  kept on failure and appended to by the next call; and this module runs
  without the compiled extension.)
* An interrupted download is resumed by the next call (``Range`` request). The
  validator of the partial file (ETag / Last-Modified / size) is kept next to it
  in ``<dest>.incomplete.json`` and sent as ``If-Range``; a ``206`` whose
  ``Content-Range`` or ETag does not continue the partial file is discarded and
  the download restarts from zero, so a changed remote file is never spliced.
* Two processes downloading the same ``dest`` serialise on ``flock(<dest>.lock)``;
  the second one finds the finished file and returns it.

``hub_download`` picks the first of several candidate files that exists in a
hub repo and downloads it with ``huggingface_hub.hf_hub_download`` (real HF cache
layout), translating the hub's errors into ones that name the repo and files.

Offline mode (``HF_HUB_OFFLINE`` or ``LAKE_OFFLINE`` truthy) is checked here,
before any network call: huggingface_hub reads ``HF_HUB_OFFLINE`` only when it is
imported.

This module imports nothing from pylake (it is loaded standalone by its tests).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Iterator, Sequence

__all__ = ["is_offline", "download_url", "hub_download"]

_TRUTHY = {"1", "true", "yes", "on"}
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "LAKE_OFFLINE")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE_RE = re.compile(r"bytes\s+\*/(\d+)\s*$", re.IGNORECASE)
_USER_AGENT = "pylake-download/1"


def is_offline() -> bool:
    """True when HF_HUB_OFFLINE or LAKE_OFFLINE is "1", "true", "yes" or "on" (any case)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUTHY for v in _OFFLINE_VARS)


def _offline_vars_set() -> str:
    on = [v for v in _OFFLINE_VARS if os.environ.get(v, "").strip().lower() in _TRUTHY]
    return " and ".join(f"{v}={os.environ[v]}" for v in on) or "offline mode"


# --------------------------------------------------------------------------- helpers


def _sha256_file(path: str, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: str) -> None:
    """Make a rename in `path` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


@contextlib.contextmanager
def _file_lock(path: str, *, what: str, announce: bool) -> Iterator[None]:
    """An exclusive flock on `path`, removed again on release.

    Removing a lock file is racy unless each holder checks, once it has the lock,
    that the path still names the inode it locked (a process that waited on a
    file unlinked meanwhile retries on the new one). Without fcntl (Windows) this
    is a no-op.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not Linux/macOS
        yield
        return
    announced = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if announce and not announced:
                    print(f"waiting for another process that is downloading {what} (lock {path})", file=sys.stderr)
                    announced = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                continue  # the file we locked was removed by its previous holder: lock the new one
            try:
                yield
            finally:
                _remove(path)
            return
        finally:
            os.close(fd)  # closing releases the flock


class _NoRedirectToOtherSchemes(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise urllib.error.HTTPError(
                newurl, code, f"redirect from {req.full_url} to a non-http(s) url {newurl!r} refused", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_NoRedirectToOtherSchemes())


def _progress_bar(enabled: bool, total: int | None, initial: int, desc: str):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    )


def _read_meta(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _write_meta(path: str, meta: dict) -> None:
    # The partial file's sidecar, replaced whole (no fsync: a lost one only restarts the download).
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f)
    os.replace(tmp, path)


def _strong_etag(etag: str | None) -> str | None:
    if not etag or etag.startswith("W/"):
        return None
    return etag


class _Transfer(Exception):
    """A transport failure while streaming (kept apart from checksum/usage errors)."""

    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _Restart(Exception):
    """The partial file does not continue into this response: start again from zero."""


# --------------------------------------------------------------------------- download_url


def download_url(
    url: str,
    dest: str,
    *,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    headers: dict[str, str] | None = None,
) -> str:
    """Download `url` to `dest` (atomically, resumably, optionally SHA-256 verified); return `dest`.

    If `dest` already exists and `sha256` is None or matches, nothing is fetched.
    A `dest` whose SHA-256 differs is re-downloaded and only replaced once the new
    file verifies. Raises ValueError for a bad url/sha256 argument or a download
    whose checksum does not match (the partial file is deleted), RuntimeError for
    network/HTTP failures (the partial file is kept and rerunning resumes) and in
    offline mode. `headers` are extra request headers (e.g. authorization).
    """
    if not isinstance(url, str):
        raise TypeError(f"download_url: url must be a str, got {type(url).__name__}")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"download_url: only http:// and https:// urls are supported, got {url!r}")
    dest = os.fspath(dest)
    if not dest or dest.endswith(os.sep) or os.path.isdir(dest):
        raise ValueError(f"download_url: dest must be a file path, got {dest!r} (for {url})")
    expected = None
    if sha256 is not None:
        expected = str(sha256).strip().lower()
        if not _SHA256_RE.fullmatch(expected):
            raise ValueError(f"download_url: sha256 for {url} must be 64 hex digits, got {sha256!r}")
    if chunk_size <= 0:
        raise ValueError(f"download_url: chunk_size must be positive, got {chunk_size}")

    def good(path: str) -> bool:
        return expected is None or _sha256_file(path, chunk_size) == expected

    seen = None
    if os.path.isfile(dest):
        seen = os.stat(dest)
        if good(dest):
            return dest
        warnings.warn(
            f"{dest} exists but its SHA-256 is not the expected {expected}: it is not trusted and is downloaded "
            f"again from {url} (it is replaced only once the new file verifies)",
            RuntimeWarning,
            stacklevel=2,
        )

    if is_offline():
        state = "has the wrong SHA-256" if seen is not None else "is missing"
        check = f" with SHA-256 {expected}" if expected else ""
        raise RuntimeError(
            f"{dest} {state} and downloads are off ({_offline_vars_set()}), so it is not fetched from {url}: "
            f"put the file{check} at {dest}, or unset the offline variable"
        )

    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    with _file_lock(f"{dest}.lock", what=dest, announce=progress):
        # Another process may have finished (or replaced) dest while we waited for the lock.
        if os.path.isfile(dest):
            now = os.stat(dest)
            unchanged = seen is not None and (now.st_ino, now.st_size, now.st_mtime_ns) == (
                seen.st_ino,
                seen.st_size,
                seen.st_mtime_ns,
            )
            if not unchanged and good(dest):
                return dest
        _fetch(url, dest, expected, progress=progress, timeout=timeout, chunk_size=chunk_size, headers=headers)
        _fsync_dir(parent)
    return dest


class _State:
    """What one download call knows, for the error message of a failed attempt."""

    def __init__(self, total: int | None):
        self.total = total


def _fetch(
    url: str,
    dest: str,
    expected: str | None,
    *,
    progress: bool,
    timeout: float,
    chunk_size: int,
    headers: dict[str, str] | None,
) -> None:
    part = f"{dest}.incomplete"
    meta_path = f"{part}.json"
    opener = _opener()
    base_headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    base_headers.update(headers or {})

    # A partial file is resumed only with the record of what it is a part of.
    resume_from = 0
    meta = _read_meta(meta_path)
    if os.path.isfile(part):
        size = os.path.getsize(part)
        usable = (
            meta is not None
            and meta.get("url") == url
            and size > 0
            and (meta.get("total") is None or size <= meta["total"])
        )
        if usable:
            resume_from = size
        else:
            _remove(part)
            _remove(meta_path)
            meta = None
    else:
        _remove(meta_path)
        meta = None

    state = _State(meta.get("total") if meta else None)
    for _attempt in range(3):
        try:
            _attempt_fetch(
                url, dest, part, meta_path, expected, meta, resume_from, state,
                opener=opener, base_headers=base_headers, progress=progress, timeout=timeout, chunk_size=chunk_size,
            )
            return
        except _Restart:
            _remove(part)
            _remove(meta_path)
            resume_from, meta = 0, None
            state.total = None
        except _Transfer as e:
            have = os.path.getsize(part) if os.path.isfile(part) else 0
            if state.total is not None:
                arrived = f"{have} of {state.total} bytes"
            else:
                arrived = f"{have} bytes (of an unknown size)"
            if have:
                tail = f"the partial file {part} is kept and rerunning the same call resumes from byte {have}"
            else:
                tail = "nothing was kept; rerunning the same call retries"
            raise RuntimeError(f"downloading {url} to {dest} failed: {e.reason}; {arrived} arrived; {tail}") from (
                e.__cause__ or None
            )
    raise RuntimeError(f"downloading {url} to {dest}: the remote file kept changing during the download; rerun later")


def _open(opener, req, timeout):
    try:
        return opener.open(req, timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _Transfer(f"no answer within {timeout} s ({reason})") from e
        raise _Transfer(f"cannot connect ({reason})") from e


def _attempt_fetch(
    url, dest, part, meta_path, expected, meta, resume_from, state, *, opener, base_headers, progress, timeout,
    chunk_size,
):
    """One GET (a Range request when resuming); raises _Restart or _Transfer unless dest was completed."""
    req_headers = dict(base_headers)
    if resume_from:
        req_headers["Range"] = f"bytes={resume_from}-"
        validator = _strong_etag(meta.get("etag")) or meta.get("last_modified")
        if validator:
            req_headers["If-Range"] = validator
    req = urllib.request.Request(url, headers=req_headers, method="GET")
    try:
        resp = _open(opener, req, timeout)
    except urllib.error.HTTPError as e:
        with contextlib.closing(e):
            if e.code == 416 and resume_from:
                _on_unsatisfiable(url, dest, part, meta_path, expected, meta, resume_from, e, chunk_size)
                return
            raise _Transfer(f"HTTP {e.code} {e.reason}", status=e.code) from e

    with contextlib.closing(resp):
        status = resp.status
        h = resp.headers
        encoding = (h.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", ""):
            raise _Transfer(f"the server sent Content-Encoding {encoding!r}, not the file itself")
        length = h.get("Content-Length")
        length = int(length) if length and length.strip().isdigit() else None
        etag = h.get("ETag")
        last_modified = h.get("Last-Modified")
        content_range = h.get("Content-Range") or ""

        hasher = hashlib.sha256() if expected else None
        if status == 206 and resume_from:
            m = _CONTENT_RANGE_RE.match(content_range)
            if not m or int(m.group(1)) != resume_from:
                raise _Restart()  # not the continuation we asked for
            total = None if m.group(3) == "*" else int(m.group(3))
            if meta.get("total") is not None and total != meta["total"]:
                raise _Restart()  # another file (another size)
            if _strong_etag(meta.get("etag")) and etag != meta["etag"]:
                raise _Restart()  # the server ignored If-Range but the file changed
            if length is not None and total is not None and resume_from + length != total:
                raise _Restart()
            if total is None and length is not None:
                total = resume_from + length
            if hasher is not None:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(chunk_size), b""):
                        hasher.update(block)
            mode, got = "ab", resume_from
        elif status == 200 or (status == 206 and not resume_from):
            # 200: a fresh download, or the server ignored the Range / the file changed (If-Range): from zero.
            total = length
            if status == 206:
                m = _CONTENT_RANGE_RE.match(content_range)
                if not m or int(m.group(1)) != 0:
                    raise _Transfer(f"unexpected HTTP 206 with Content-Range {content_range!r} to a plain GET")
                total = None if m.group(3) == "*" else int(m.group(3))
            mode, got = "wb", 0
            _write_meta(meta_path, {"url": url, "etag": etag, "last_modified": last_modified, "total": total})
        else:
            raise _Transfer(f"unexpected HTTP {status} {resp.reason}", status=status)
        state.total = total

        bar = _progress_bar(progress, total, got, os.path.basename(dest))
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        block = resp.read(chunk_size)
                    except (OSError, http.client.HTTPException, ValueError) as e:
                        f.flush()
                        if isinstance(e, (socket.timeout, TimeoutError)):
                            raise _Transfer(f"no data for {timeout} s") from e
                        if isinstance(e, http.client.IncompleteRead) and e.partial:
                            f.write(e.partial)
                            got += len(e.partial)
                        raise _Transfer(f"the connection broke ({type(e).__name__}: {e})") from e
                    if not block:
                        break
                    f.write(block)
                    got += len(block)
                    if hasher is not None:
                        hasher.update(block)
                    if bar is not None:
                        bar.update(len(block))
                f.flush()
                os.fsync(f.fileno())
        finally:
            if bar is not None:
                bar.close()

    if total is not None and got != total:
        raise _Transfer("the connection closed before the end of the file (short read)")
    _finish(url, dest, part, meta_path, expected, hasher.hexdigest() if hasher else None)


def _on_unsatisfiable(url, dest, part, meta_path, expected, meta, resume_from, err, chunk_size):
    """HTTP 416 on a resume: the partial file may already be the whole file."""
    m = _UNSATISFIED_RANGE_RE.match(err.headers.get("Content-Range") or "")
    total = int(m.group(1)) if m else None
    etag = err.headers.get("ETag")
    if total is None or total != resume_from or (meta.get("total") not in (None, total)):
        raise _Restart()
    if _strong_etag(meta.get("etag")) and etag and etag != meta["etag"]:
        raise _Restart()
    _finish(url, dest, part, meta_path, expected, _sha256_file(part, chunk_size) if expected else None)


def _finish(url, dest, part, meta_path, expected, actual):
    if expected is not None and actual != expected:
        _remove(part)
        _remove(meta_path)
        raise ValueError(
            f"the file downloaded from {url} for {dest} has SHA-256 {actual}, expected {expected}; "
            f"the download was deleted and {dest} left untouched"
        )
    os.replace(part, dest)
    _remove(meta_path)


# --------------------------------------------------------------------------- hub_download


def _hub_errors():
    try:
        from huggingface_hub import errors as E
    except ImportError:  # huggingface_hub < 0.20 kept them in utils
        from huggingface_hub import utils as E
    local = E.LocalEntryNotFoundError
    remote = getattr(E, "RemoteEntryNotFoundError", None) or E.EntryNotFoundError
    return E, local, remote


def _silent_tqdm():
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _Silent(hf_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return _Silent


def hub_download(
    repo_id: str,
    candidates: Sequence[str],
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    endpoint: str | None = None,
    progress: bool = True,
    token: str | bool | None = None,
) -> str:
    """Download the first of `candidates` that exists in hub repo `repo_id`; return its local cache path.

    Uses huggingface_hub.hf_hub_download (the real HF cache layout, atomic).
    In offline mode the first candidate already in the cache is returned, with no
    network access. Raises ValueError when none of the candidates exist in the
    repo, RuntimeError when offline with nothing cached, when the repo/revision is
    not found or gated, or when the hub cannot be reached.
    """
    if isinstance(candidates, str):
        candidates = [candidates]
    candidates = list(candidates)
    if not candidates or not all(isinstance(c, str) and c for c in candidates):
        raise ValueError(f"hub_download: candidates for {repo_id!r} must be non-empty file names, got {candidates!r}")
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError as e:
        raise RuntimeError(
            f"downloading {candidates} from the hub repo {repo_id} needs huggingface_hub: pip install 'pylake[hub]' (or huggingface_hub)"
        ) from e

    cache_root = os.path.abspath(os.path.expanduser(os.fspath(cache_dir))) if cache_dir else constants.HF_HUB_CACHE
    repo_folder = os.path.join(cache_root, "models--" + repo_id.replace("/", "--"))
    rev = revision or "main"
    host = endpoint or constants.ENDPOINT
    files = " or ".join(candidates)

    def not_cached(why: str) -> RuntimeError:
        return RuntimeError(
            f"{why}, and none of {candidates} of the hub repo {repo_id} (revision {rev}) is in the cache: they would "
            f"be in {repo_folder}{os.sep}snapshots{os.sep}<commit>{os.sep}; download {files} there with "
            f"network access (e.g. `hf download {repo_id} {candidates[0]} --cache-dir {cache_root}`) "
            f"or pass a local path"
        )

    if is_offline():
        for name in candidates:
            found = huggingface_hub.try_to_load_from_cache(repo_id, name, cache_dir=cache_root, revision=revision)
            if isinstance(found, str) and os.path.isfile(found):
                return found
        raise not_cached(f"downloads are off ({_offline_vars_set()})")

    E, LocalNotFound, RemoteNotFound = _hub_errors()
    kwargs = {"revision": revision, "cache_dir": cache_root, "endpoint": endpoint, "token": token}
    if not progress:
        kwargs["tqdm_class"] = _silent_tqdm()
    for name in candidates:
        try:
            return huggingface_hub.hf_hub_download(repo_id, name, **kwargs)
        except LocalNotFound as e:
            cause = e.__cause__
            if isinstance(cause, E.HfHubHTTPError) and getattr(cause.response, "status_code", None) == 404:
                continue  # a plain 404 without the hub's X-Error-Code: not in the repo
            if isinstance(cause, E.OfflineModeIsEnabled) or constants.HF_HUB_OFFLINE:
                raise not_cached(
                    "huggingface_hub is in offline mode (HF_HUB_OFFLINE was set when it was imported)"
                ) from e
            raise not_cached(f"the hub at {host} could not be reached or answered wrongly ({cause or e})") from e
        except RemoteNotFound:
            continue  # not in the repo: try the next candidate
        except E.GatedRepoError as e:
            raise RuntimeError(
                f"the hub repo {repo_id} is gated: accept its terms on {host}/{repo_id} and log in "
                f"(`hf auth login` or HF_TOKEN) to download {name}"
            ) from e
        except E.RepositoryNotFoundError as e:
            raise RuntimeError(
                f"the hub repo {repo_id} was not found on {host} (or it is private and no valid token was given); "
                f"check the name"
            ) from e
        except E.RevisionNotFoundError as e:
            raise RuntimeError(f"the hub repo {repo_id} has no revision {rev!r} on {host}") from e
        except E.HfHubHTTPError as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            raise RuntimeError(
                f"downloading {name} of the hub repo {repo_id} from {host} failed: HTTP {status}: {e}"
            ) from e
        except OSError as e:
            raise RuntimeError(
                f"downloading {name} of the hub repo {repo_id} from {host} into {repo_folder} failed: {e}; "
                f"rerun to retry"
            ) from e
    raise ValueError(
        f"none of the files {candidates} exist in the hub repo {repo_id} (revision {rev}) on {host}; "
        f"expected at least one of them"
    )
