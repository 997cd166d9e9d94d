"""Helpers shared by the tests (importable as `helpers`: pytest puts tests/ on sys.path)."""

import shutil
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
