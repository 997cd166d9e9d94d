"""Files that can be trusted: atomic writes, append-only JSONL, done markers, shard locks.

    with ShardWriter(path) as w:         # exclusive lock; fails if another writer holds it
        w.append_many(records)            # one line per record, flushed and fsynced
    write_done(path.with_suffix(".done"), {"records": n})

A reader never sees half a file; a torn last line after a kill is skipped and reported.
A write the disk refuses (full, over quota, read-only) raises StorageError, whose message
names the file and the reason; what was appended before it stays.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


class LockedError(RuntimeError):
    """Another process is writing the same shard file."""


# The disk, not the program, said no: the user can fix these and run again.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class StorageError(OSError):
    """A write the disk refused: `<path>: cannot <action> (<reason>)<detail>`, one line."""

    def __init__(self, path: str | Path, action: str, err: OSError, detail: str = ""):
        super().__init__(err.errno, err.strerror or str(err))
        self.path, self.action, self.detail = Path(path), action, detail

    def __str__(self) -> str:
        return f"{self.path}: cannot {self.action} ({self.strerror}){self.detail}"


def _disk_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and not isinstance(e, StorageError) and e.errno in DISK_ERRNOS


@dataclass
class JsonlRead:
    records: list[dict] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary name in the same folder, fsync, then rename over `path`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_npy(path: str | Path, array) -> None:
    """A NumPy array as .npy, written like any other file (temp name, fsync, rename)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if _disk_error(e):
            raise StorageError(path, "write", e, "; free space (or make the folder writable) "
                               "and run again") from e
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if _disk_error(e):
            raise StorageError(path, "write", e, "; the previous version, if any, is unchanged; "
                               "free space (or make the folder writable) and run again") from e
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: str | Path, records) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str | Path) -> JsonlRead:
    """Every valid JSON object in the file; torn, empty or non-JSON lines are listed, not fatal."""
    out = JsonlRead()
    path = Path(path)
    if not path.exists():
        return out
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                out.bad_lines.append((lineno, "torn last line (no newline)"))
                continue
            text = raw.strip()
            if not text:
                out.bad_lines.append((lineno, "empty line"))
                continue
            try:
                obj = json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                out.bad_lines.append((lineno, f"not JSON: {e}"))
                continue
            if not isinstance(obj, dict):
                out.bad_lines.append((lineno, "not a JSON object"))
                continue
            out.records.append(obj)
    return out


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_done(path: str | Path, info: dict) -> None:
    atomic_write_json(path, info)


def read_done(path: str | Path) -> dict | None:
    """The marker's content, or None if absent or unreadable (an unreadable marker is not done)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


KEPT = ("; the records already written are kept; free space (or make the folder writable) "
        "and run again")


class ShardWriter:
    """Append-only JSONL writer holding an exclusive lock on `<path>.lock` while open.

    A torn tail left by a killed writer is cut off with a newline first, so the next
    record starts on a line of its own and the torn line stays readable as garbage.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd = None
        self._f = None

    def __enter__(self) -> ShardWriter:
        try:
            self._open()
        except BaseException as e:
            self.__exit__()
            if _disk_error(e):
                raise StorageError(self.path, "open for appending", e, KEPT) from e
            raise
        return self

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._lock_fd)
            self._lock_fd = None
            if e.errno in (errno.EAGAIN, errno.EACCES):
                holder = _read_lock_holder(lock_path)
                raise LockedError(
                    f"{self.path} is being written by another process{holder}; "
                    "a requeued job may be racing its earlier incarnation. "
                    "Wait for it to end (or cancel it) and run again."
                ) from None
            raise
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
        # Unbuffered: a failed write leaves nothing in a buffer for close() to retry.
        self._f = open(self.path, "ab", buffering=0)  # noqa: SIM115 (closed in __exit__)
        if self._f.tell() > 0:
            with open(self.path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    self._write(b"\n")

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._f.write(view):]
        os.fsync(self._f.fileno())

    def append_many(self, records) -> None:
        data = b"".join(
            (json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8") for r in records
        )
        if not data:
            return
        try:
            self._write(data)
        except OSError as e:
            if _disk_error(e):
                raise StorageError(self.path, "append", e, KEPT) from e
            raise

    def append(self, record: dict) -> None:
        self.append_many([record])

    def __exit__(self, *exc) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                if exc and exc[0] is None:
                    raise  # nothing else is being reported: this is the error
            self._f = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


def _read_lock_holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return ""
    return f" ({text})" if text else ""
