"""Where lcr keeps what it builds on demand (sample data, tiny model, extracted archives).

    build_once(cache_dir() / "tiny-llama-v1", builder)   # builds into a temp folder, renames

`LCR_CACHE` overrides the default `~/.cache/lcr`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from lcr.io import durable_path


def cache_dir() -> Path:
    root = os.environ.get("LCR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lcr"
    )
    return Path(root)


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp_folder)` and rename it to `target`, unless target exists already.

    Concurrent callers (array tasks on one node) serialise on a lock file; a half-built
    folder is never visible under `target`.
    """
    target = Path(target)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():
            return target
        with durable_path(target, folder=True) as tmp:
            build(tmp)
    return target
