"""Files that can be trusted: one durable-write primitive, JSON lines, locks, done markers.

    with durable_path(path) as tmp:       # write tmp any way you like (text, .npy, a PNG) ...
        fig.savefig(tmp)                  # ... it is fsynced and renamed over path on success
    with ShardWriter(path) as w:          # exclusive lock; fails if another writer holds it
        w.append_many(records)            # one line per record, flushed and fsynced
    write_done(path.with_suffix(".done"), {"records": n})

A reader never sees half a file: every whole-file write goes through `durable_path` (a
temporary name in the same folder, fsync, rename; the user's umask decides the mode). A torn
last line after a kill is skipped and reported. Lines are encoded and decoded by `jsonlines`.
A write the disk refuses (full, over quota, read-only) raises StorageError, whose message names
the file and the reason; what was written before it stays.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jsonlines

from lcr.errors import DISK_ERRNOS, InputError, LockHeld


class LockedError(LockHeld, RuntimeError):
    """Another process holds the lock (a shard file being written, a submit in progress)."""


STALE_TEMP_S = 24 * 3600  # a temporary file this old is a leftover, whoever made it


class StorageError(InputError, OSError):
    """A write the disk refused: `<path>: cannot <action> (<reason>)<detail>`, one line."""

    def __init__(self, path: str | Path, action: str, err: OSError, detail: str = ""):
        super().__init__(err.errno, err.strerror or str(err))
        self.path, self.action, self.detail = Path(path), action, detail

    def __str__(self) -> str:
        return f"{self.path}: cannot {self.action} ({self.strerror}){self.detail}"


def _disk_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and not isinstance(e, StorageError) and e.errno in DISK_ERRNOS


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---- the one primitive for whole files (and folders) -------------------------------------

def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{socket.gethostname()}.{os.getpid()}."


def clean_stale_temps(path: Path) -> None:
    """Remove temporary files a killed writer of `path` left behind: this host's whose process
    is gone, and anyone's older than a day."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name[len(path.name) + 2:].split(".")
        try:
            host, pid = parts[0], int(parts[1])
            gone = host == socket.gethostname() and not _alive(pid)
            if gone or time.time() - tmp.stat().st_mtime > STALE_TEMP_S:
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        except (ValueError, IndexError, OSError):
            continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def durable_path(path: str | Path, folder: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` to write; on success it is made durable (fsynced, the
    umask's mode) and renamed over `path`; on failure it is removed and `path` is unchanged."""
    path = Path(path)
    fix = "; the previous version, if any, is unchanged; free space (or make the folder " \
          "writable) and run again"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(path)
        if folder:
            tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp",
                                        dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp",
                                        dir=path.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as e:
        if _disk_error(e):
            raise StorageError(path, "write", e, fix) from e
        raise
    try:
        yield tmp
        if not folder:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600: a teammate must read it
        else:
            os.chmod(tmp, 0o777 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        if _disk_error(e):
            raise StorageError(path, "write", e, fix) from e
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with durable_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: str | Path, records) -> None:
    atomic_write_bytes(path, encode_lines(records))


def atomic_write_npy(path: str | Path, array) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


# ---- JSON lines ----------------------------------------------------------------------------

@dataclass
class JsonlRead:
    records: list[dict] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def encode_lines(records) -> bytes:
    buf = io.BytesIO()
    with jsonlines.Writer(buf, compact=True) as w:
        w.write_all(records)
        return buf.getvalue()


def read_jsonl(path: str | Path) -> JsonlRead:
    """Every JSON object in the file; torn, empty or non-JSON lines are listed, not fatal."""
    path = Path(path)
    return parse_jsonl(path.read_bytes()) if path.exists() else JsonlRead()


def parse_jsonl(data: bytes) -> JsonlRead:
    """read_jsonl of a file's bytes already read (to hash them too)."""
    out = JsonlRead()
    lines = data.splitlines(keepends=True)
    torn = bool(lines) and not lines[-1].endswith(b"\n")
    reader = jsonlines.Reader(lines[:-1] if torn else lines)
    while True:
        try:
            out.records.append(reader.read(type=dict))
        except jsonlines.InvalidLineError as e:
            line = lines[e.lineno - 1]
            why = ("empty line" if not line.strip() else "not a JSON object"
                   if "requested type" in str(e) else f"not JSON: {e}")
            out.bad_lines.append((e.lineno, why))
        except EOFError:
            break
    if torn:
        out.bad_lines.append((len(lines), "torn last line (no newline)"))
    return out


# ---- locks and appends ---------------------------------------------------------------------

class _Lock:
    """An exclusive flock on a lock file, which names its holder for the error message.

    `message` says what is going on, with `{holder}` where "(pid N on HOST)" goes. The file is
    removed when the lock is released (and the folders made for it, if they are empty then):
    a holder unlinks it before unlocking, and a taker checks that the file it locked is still
    the one at the path, else it locks the new one, so no two processes ever hold it at once."""

    def __init__(self, path: Path, message: str):
        self.path, self.message, self.fd = path, message, None
        self.made: list[Path] = []

    def acquire(self, wait_s: float = 0.0, quiet: bool = False) -> None:
        """Take the lock, waiting up to `wait_s` seconds for its holder (saying so once)."""
        deadline, told = time.time() + wait_s, False
        while not self._take(blocking=wait_s == float("inf")):
            if time.time() >= deadline:
                raise LockedError(self.message.format(holder=_holder(self.path)))
            if not told and not quiet:
                print(f"waiting for the lock {self.path}{_holder(self.path)} ...",
                      file=sys.stderr, flush=True)
                told = True
            time.sleep(0.5)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())

    def _take(self, blocking: bool) -> bool:
        """Open and flock the lock file; False while another process holds it."""
        while True:
            try:
                self.made += make_dirs(self.path.parent)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                if _disk_error(e):
                    raise StorageError(self.path, "take the lock", e,
                                       f"; make {self.path.parent} writable (or work in "
                                       "another folder) and run again") from e
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    return False
                raise
            if _same_file(fd, self.path):
                self.fd = fd
                return True
            os.close(fd)  # its holder removed it as we opened it: lock the new one

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):  # unlinked while held: no one can lock it then
                self.path.unlink()
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
            remove_empty_dirs(self.made)
            self.made = []


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def make_dirs(folder: Path) -> list[Path]:
    """mkdir -p; the folders it made, outermost first (remove_empty_dirs undoes them)."""
    missing = []
    for d in [folder, *folder.parents]:
        if d.exists():
            break
        missing.append(d)
    folder.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def remove_empty_dirs(made: list[Path]) -> None:
    """Remove folders that make_dirs made, innermost first, as long as they are empty."""
    for d in reversed(made):
        try:
            d.rmdir()
        except OSError:
            return


def _holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return ""
    return f" ({text})" if text else ""


_HELD: set[str] = set()  # lock files this process holds through `locked`


@contextlib.contextmanager
def locked(path: str | Path, message: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on `path`, waiting up to `wait_s` for its holder; then
    LockedError(message) naming the holder. Reentrant within a process (`lcr submit` holds
    the run's lock around the plan, which takes it too)."""
    key = os.path.abspath(path)
    if key in _HELD:
        yield
        return
    lock = _Lock(Path(path), message)
    lock.acquire(wait_s)
    _HELD.add(key)
    try:
        yield
    finally:
        _HELD.discard(key)
        lock.release()


def update_json(path: str | Path, change: Callable[[dict | None], dict]) -> dict:
    """Read, change and rewrite a JSON file under a lock that waits for other writers."""
    path = Path(path)
    lock = _Lock(path.with_name(path.name + ".lock"), "")
    lock.acquire(wait_s=float("inf"))
    try:
        try:
            data = json.loads(path.read_text()) if path.exists() else None
        except ValueError as e:
            raise StorageError(path, "update", OSError(errno.EINVAL, f"damaged: {e}"),
                               "; move it aside and run again") from None
        new = change(data)
        atomic_write_json(path, new)
        return new
    finally:
        lock.release()


KEPT = ("; the records already written are kept; free space (or make the folder writable) "
        "and run again")


def _append(fd: int, path: Path, records) -> None:
    """Append records as lines to an open file, after a newline if a killed writer left a
    torn tail; fsynced. Unbuffered: a failed write leaves nothing for close() to retry."""
    data = encode_lines(records)
    if not data:
        return
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as e:
        if _disk_error(e):
            raise StorageError(path, "append", e, KEPT) from e
        raise


def append_locked(path: str | Path, records) -> None:
    """Append lines to a file that several processes share, under a short lock each time."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _append(fd, path, records)
    finally:
        os.close(fd)  # releases the lock


class ShardWriter:
    """Append-only JSONL writer holding an exclusive lock on `<path>.lock` while open.

    A torn tail left by a killed writer is cut off with a newline first, so the next
    record starts on a line of its own and the torn line stays readable as garbage.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = _Lock(self.path.with_name(self.path.name + ".lock"),
                           f"{self.path} is being written by another process{{holder}}; a "
                           "requeued job may be racing its earlier incarnation. Wait for it to "
                           "end (or cancel it) and run again.")
        self._fd = None

    def __enter__(self) -> ShardWriter:
        try:
            self._lock.acquire()
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        except BaseException as e:
            self.__exit__()
            if _disk_error(e):
                raise StorageError(self.path, "open for appending", e, KEPT) from e
            raise
        return self

    def append_many(self, records) -> None:
        _append(self._fd, self.path, records)

    def append(self, record: dict) -> None:
        self.append_many([record])

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lock.release()


# ---- paths a compiler can use ----------------------------------------------------------------

def spaceless(folder: str | Path) -> Path:
    """`folder` (made if missing), or, where its path holds a space, a symlink to it whose path
    holds none: torch's C++ compile (the vLLM compile cache) splits its command at spaces.
    The link lives in the temp folder, named by user and target; it is this user's or refused."""
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    if not any(c.isspace() for c in str(folder)):
        return folder
    tmp = tempfile.gettempdir()
    base = Path(tmp if not any(c.isspace() for c in tmp) else "/tmp")
    link = base / f"lcr-{os.getuid()}-{hashlib.sha256(str(folder).encode()).hexdigest()[:12]}"
    if link.is_symlink() and os.readlink(link) == str(folder) and \
            link.lstat().st_uid == os.getuid():
        return link
    staged = link.with_name(f"{link.name}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        staged.symlink_to(folder)
        os.replace(staged, link)  # over a stale link of ours; another user's is refused
    except OSError as e:
        raise StorageError(link, "make a link without spaces to " + str(folder), e,
                           "; set engine.compile_cache to a folder whose path has no spaces"
                           ) from e
    return link


# ---- done markers and hashes -----------------------------------------------------------------

def write_done(path: str | Path, info: dict) -> None:
    atomic_write_json(path, info)


def read_done(path: str | Path) -> dict | None:
    """The marker's content, or None if absent or unreadable (an unreadable marker is not done)."""
    try:
        info = json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError, UnicodeDecodeError):
        return None
    return info if isinstance(info, dict) else None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
