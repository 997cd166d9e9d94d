"""Helpers shared by the tests (importable as `helpers`: pytest puts tests/ on sys.path)."""

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from http.server import ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "jobs" / "demo.toml"


def demo_config(root, *overrides):
    from lcr.config import load_config

    return load_config(DEMO, [f"run.root={str(root)!r}", *overrides])


def copy_run(src, dst_root, name="copy"):
    """A private copy of a planned run directory (config, questions, prompts, plan)."""
    dst = Path(dst_root) / name
    shutil.copytree(src, dst)
    return dst


_COUNTERS: list = []  # the Counters of open_counts() blocks now running


def _on_open(event, args):
    if event == "open" and _COUNTERS and isinstance(args[0], (str, os.PathLike)):
        path = Path(os.path.abspath(os.fsdecode(args[0])))
        for folder, counts in _COUNTERS:
            if folder in path.parents:
                counts[path.name] += 1


@contextlib.contextmanager
def open_counts(folder):
    """How often each file under `folder` is opened (read or written) inside the block, by
    name: counted by an audit hook, so every open counts, the library's and Python's own."""
    if not getattr(sys, "_lcr_open_hook", False):
        sys.addaudithook(_on_open)  # hooks cannot be removed: one per process, idle outside
        sys._lcr_open_hook = True
    counts: Counter = Counter()
    _COUNTERS.append((Path(os.path.abspath(folder)), counts))
    try:
        yield counts
    finally:
        _COUNTERS.pop()


@contextlib.contextmanager
def lock_held_elsewhere(path):
    """Another process holds the lock file `path` (as lcr.io.locked takes it) until the block
    ends; yields that process's pid."""
    code = ("import sys\nfrom lcr.io import locked\nwith locked(sys.argv[1], ''):\n"
            "    print('held', flush=True)\n    sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


class LocalServer:
    """A real HTTP server on 127.0.0.1 in a thread, for judge endpoints that misbehave on
    purpose: the handler appends what it saw to `httpd.log` under `httpd.lock` and answers with
    `httpd.behave(n, ...)`. Subclasses name the handler and the first behaviour."""

    handler: type
    default = None

    def __init__(self, port: int = 0, behave=None):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self.handler)
        self.httpd.log, self.httpd.lock = [], threading.Lock()
        self.httpd.behave = behave or type(self).default
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def behave(self, fn) -> None:
        self.httpd.behave = fn

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
