"""The run directory: where each stage's files live, how they are read, and when work is done.

    rd = RunDir("shards/demo")
    rd.generate_file(3)              # shards/demo/generate/shard-0003.jsonl
    cfg, meta = rd.load_config()
    spec = rd.shard(3)               # plan.json's shard 3
    rd.generate_done(spec)           # its done marker, if it vouches for those units

Every stage reads its inputs through this module and writes through lcr.io, so the contract
(the README's "Run directory (the contract)") has one home and no stage imports another.
A done marker counts only when it covers exactly the units it claims (the hashes of
lcr.units): a plan that changed since, or a marker copied from elsewhere, is not done. What
`--set` may change once a run is planned lives in lcr.overrides.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from lcr.config import Config, ConfigError, config_from_dict
from lcr.errors import InputError
from lcr.io import locked, parse_jsonl, read_done, read_jsonl, sha256_file
from lcr.overrides import changeable_text, fixed_differences
from lcr.units import answers_sha, keys_sha, officials_sha, prompt_id, prompts_sha

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")
VERDICT_FIELDS = ("key", "question_id", "seed", "sample", "document_set_id", "verdict")


class RunDirError(InputError, ValueError):
    """A run directory file that is missing or damaged, with the file and the way on."""


_SAFE_OUT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def quoted(path) -> str:
    """A path as a shell word, for commands printed to be copied."""
    return shlex.quote(str(path))


def check_out_name(out: str) -> str:
    """An --out NAME becomes part of file names (judge-NAME/, verdicts-NAME.jsonl, ...)."""
    if out and not _SAFE_OUT.match(out):
        raise ConfigError(f"--out {out!r} is not a safe name (letters, digits, '.', '_', '-'; "
                          "not starting with '.' or '-')")
    return out


def _holds(path: Path, sha: str) -> bool:
    try:
        return sha256_file(path) == sha
    except OSError:
        return False


LOCK_WAIT_S = 120.0  # how long a second plan, submit or rerun of a run waits for the first


class RunDir:
    """One run directory. Its readers keep what they parsed for as long as the file is
    unchanged (same inode, size and modification time), so a command reads each file once
    however many checks ask: what they return is shared, to be read, not modified
    (load_config builds a fresh Config each time, since overrides change it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._memo: dict[tuple[Path, str], tuple[tuple, object]] = {}

    def _cached(self, path: Path, what: str, read: Callable[[], T]) -> T:
        """read(), or what it returned last time if `path` has not changed since."""
        try:
            st = path.stat()
        except OSError:
            return read()  # missing or unreadable: the reader says so
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        hit = self._memo.get((path, what))
        if hit is None or hit[0] != sig:
            hit = self._memo[(path, what)] = (sig, read())
        return hit[1]

    def lock(self, wait_s: float | None = None):
        """One plan, submit or rerun at a time per run directory: a second one waits for the
        first (then finds its plan and its jobs). The lock file lies beside the directory, so
        a refused command leaves the directory as it was; it is removed when released."""
        wait_s = LOCK_WAIT_S if wait_s is None else wait_s
        return locked(self.path.parent / f".{self.path.name}.lock",
                      f"another `lcr plan`, `lcr submit` or `lcr rerun` of {self.path} is still "
                      "running{holder} after " f"{wait_s:.0f} s; wait for it to end, then "
                      f"`lcr status {quoted(self.path)}` shows what it did", wait_s=wait_s)

    # ---- paths: inputs made by prepare and plan
    @property
    def config_file(self) -> Path:
        return self.path / "config.toml"

    @property
    def questions_file(self) -> Path:
        return self.path / "questions.jsonl"

    @property
    def plan_file(self) -> Path:
        return self.path / "plan.json"

    # ---- paths: generation
    @property
    def generate_dir(self) -> Path:
        return self.path / "generate"

    def generate_file(self, shard: int, part: int | None = None) -> Path:
        suffix = "" if part is None else f".part-{part}"
        return self.generate_dir / f"shard-{shard:04d}{suffix}.jsonl"

    def generate_marker(self, shard: int, part: int | None = None) -> Path:
        return self.generate_file(shard, part).with_suffix(".done")

    def generate_files(self, shard: int | None = None) -> list[Path]:
        """Every generation JSONL of one shard (all its replica parts), or of the whole run."""
        pattern = "shard-*.jsonl" if shard is None else f"shard-{shard:04d}*.jsonl"
        return sorted(self.generate_dir.glob(pattern))

    # ---- paths: merge, judge, report
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

    def judge_marker(self, shard: int, out: str = "") -> Path:
        return self.judge_file(shard, out).with_suffix(".done")

    def judge_settings(self, out: str = "") -> Path:
        """The judge identity an output folder was judged with (refuses a second judge)."""
        return self.judge_dir(out) / "settings.json"

    @property
    def judge_cache(self) -> Path:
        return self.path / "judge-cache.jsonl"

    def verdicts_file(self, out: str = "") -> Path:
        return self.path / ("verdicts.jsonl" if not out else f"verdicts-{out}.jsonl")

    def report_paths(self, out: str = "", pool: str = "") -> dict[str, Path]:
        """report.json / .md / .png; report-OUT.* for verdicts judged with --out OUT;
        report-pool-ID[-OUT].* for a report pooling this run with others."""
        stem = "report" + (f"-pool-{pool}" if pool else "") + (f"-{out}" if out else "")
        return {ext: self.path / f"{stem}.{ext}" for ext in ("json", "md", "png")}

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def jobs_file(self) -> Path:
        return self.path / "jobs.json"

    def exists(self) -> bool:
        return self.config_file.exists()

    # ---- readers
    def load_config(self) -> tuple[Config, dict]:
        """The resolved config saved by `lcr plan`, and its [meta] table."""
        if not self.config_file.is_file():
            what = "is a folder, not" if self.config_file.is_dir() else "holds no"
            raise ConfigError(f"{self.path}: not a run directory ({what} config.toml); run "
                              "`lcr plan CONFIG` first")
        data, meta = copy.deepcopy(self._cached(self.config_file, "toml", self._read_config))
        cfg = config_from_dict(data, str(self.config_file))
        self.check_sealed(cfg)
        return cfg, meta

    def _read_config(self) -> tuple[dict, dict]:
        try:
            data = tomllib.loads(self.config_file.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{self.config_file}: damaged ({e}); re-plan with `lcr plan "
                              "CONFIG --force` (records already written are kept)") from None
        meta = data.pop("meta", {})
        missing = [s for s in ("run", "data", "model", "sampling", "shards") if s not in data]
        if missing or not {"generation_hash", "versions", "git"} <= set(meta):
            what = f"no [{missing[0]}] table" if missing else "an incomplete [meta] table"
            raise ConfigError(f"{self.config_file}: damaged ({what}; lcr plan writes every "
                              "table); re-plan with `lcr plan CONFIG --force` (records already "
                              "written are kept)")
        return data, meta

    def check_sealed(self, cfg: Config) -> None:
        """Refuse a config.toml whose fixed settings are no longer those plan.json was made
        with (a hand edit): records made under two settings would pass as one run."""
        try:
            planned = self.load_plan()["settings"]
        except (OSError, RunDirError, KeyError, TypeError):
            return  # not planned yet, planned by an older lcr, or damaged (load_plan says so)
        diffs = fixed_differences(config_from_dict(planned, str(self.plan_file)), cfg)
        if diffs:
            raise ConfigError(
                f"{self.config_file} no longer holds the settings {self.path} was planned with "
                "(kept in plan.json):\n  " + "\n  ".join(diffs) + "\nThese decide what its "
                "records mean, so they are fixed: put them back, or re-plan with "
                "`lcr plan CONFIG --force` (records made under the old ones are then ignored, "
                f"never deleted). What may change after planning ({changeable_text()}) is set "
                f"with `lcr rerun {quoted(self.path)} --set KEY=VALUE`")

    def run_hash(self) -> str:
        """The run's generation hash, fixed when it was planned (stable across lcr upgrades)."""
        cfg, meta = self.load_config()
        return meta.get("generation_hash") or cfg.generation_hash()

    def load_plan(self) -> dict:
        if not self.plan_file.exists():
            raise RunDirError(f"{self.plan_file}: missing; run `lcr plan CONFIG` first")
        return self._cached(self.plan_file, "json", self._read_plan)

    def _read_plan(self) -> dict:
        try:
            plan = json.loads(self.plan_file.read_text())
            plan["shards"][0]["units"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise RunDirError(f"{self.plan_file}: damaged ({type(e).__name__}: {e}); re-plan "
                              "with `lcr plan CONFIG --force` (records are kept)") from None
        return plan

    def shard(self, index: int) -> dict:
        shards = self.load_plan()["shards"]
        if not 0 <= index < len(shards):
            raise RunDirError(f"{self.plan_file}: no shard {index} (the plan has "
                              f"{len(shards)}: 0-{len(shards) - 1})")
        return shards[index]

    def load_questions(self) -> list[dict]:
        """questions.jsonl, as prepare wrote it."""
        if not self.questions_file.exists():
            raise RunDirError(f"{self.questions_file}: missing; run `lcr plan CONFIG` first")
        return self._cached(self.questions_file, "jsonl", self._read_questions)

    def _read_questions(self) -> list[dict]:
        read = read_jsonl(self.questions_file)
        if read.bad_lines:
            line, why = read.bad_lines[0]
            raise RunDirError(f"{self.questions_file}:{line}: {why}; re-plan with `lcr plan "
                              "CONFIG --force`")
        return read.records

    def prompt_ids(self, question: dict) -> list[int]:
        """Token ids of one prepared prompt, checked against the sha256 in questions.jsonl."""
        path = self.path / question["prompt_file"]
        arr = np.load(path)
        if hashlib.sha256(arr.astype(np.int32).tobytes()).hexdigest() != question[
                "prompt_sha256"]:
            raise RunDirError(f"{path}: token ids do not match questions.jsonl (sha256 "
                              "differs); re-plan with `lcr plan CONFIG --force`")
        return arr.tolist()

    def prompt_id_map(self) -> dict[str, str]:
        """question_id -> prompt_id of the prepared questions."""
        return {q["question_id"]: prompt_id(q) for q in self.load_questions()}

    def current(self, rec: dict, run_hash: str, prompt_ids: dict[str, str]) -> bool:
        """A record made by this run's config from the question as it is prepared now
        (records of older lcr versions carry no prompt id: they count)."""
        made_from = rec.get("prompt_id")
        return rec.get("run_hash") == run_hash and (
            made_from is None or made_from == prompt_ids.get(rec.get("question_id")))

    def generation_records(self, shard: int, run_hash: str,
                           prompt_ids: dict[str, str] | None = None) -> dict[str, dict]:
        """Records written for a shard (every part file) by this run, by key; "ok" wins."""
        ids = self.prompt_id_map() if prompt_ids is None else prompt_ids
        done: dict[str, dict] = {}
        for path in self.generate_files(shard):
            for rec in read_jsonl(path).records:
                if "key" in rec and self.current(rec, run_hash, ids):
                    prev = done.get(rec["key"])
                    if prev is None or (prev.get("status") != "ok" and rec.get("status") == "ok"):
                        done[rec["key"]] = rec
        return done

    def generate_done(self, spec: dict, part: int | None = None,
                      units: list[dict] | None = None) -> dict | None:
        """The done marker of a shard (or replica part), if it covers exactly these units,
        made from the prompts as they are now, and its file still holds what it vouched for."""
        units = spec["units"] if units is None else units
        info = read_done(self.generate_marker(spec["index"], part))
        if not info or info.get("units_sha256") != keys_sha(units):
            return None
        if "prompts_sha256" in info and info["prompts_sha256"] != prompts_sha(
                units, self.prompt_id_map()):
            return None
        parts = info.get("parts") or [info]
        for p, part_info in enumerate(parts):
            where = part if "parts" not in info else p
            path = self.generate_file(spec["index"], where)
            if "sha256" in part_info and not _holds(path, part_info["sha256"]):
                return None  # lines were lost (or the file replaced) since it was done
        return info

    def merge_marker(self) -> dict | None:
        """merged.done's content, whether or not it still vouches for merged.jsonl."""
        return self._cached(self.merged_done, "done", lambda: read_done(self.merged_done))

    def _merged(self) -> tuple[str, list[dict]]:
        """merged.jsonl's sha256 and records, from one read."""
        def read():
            data = self.merged_file.read_bytes()
            return hashlib.sha256(data).hexdigest(), parse_jsonl(data).records

        return self._cached(self.merged_file, "read", read)

    def merge_done(self) -> dict | None:
        """merged.done, if it vouches for merged.jsonl as it is now."""
        done = self.merge_marker()
        if done is None or not self.merged_file.exists():
            return None
        return done if self._merged()[0] == done.get("sha256") else None

    def load_merged(self) -> list[dict]:
        """merged.jsonl, only if merged.done vouches for exactly this file."""
        if self.merge_marker() is None:
            raise RunDirError(
                f"{self.merged_done}: missing, so the merge is not complete; run `lcr merge "
                f"{self.path}` (it lists the missing units) and finish generation first")
        if self.merge_done() is None:
            raise RunDirError(f"{self.merged_file} does not match {self.merged_done} (sha256 "
                              f"differs); run `lcr merge {quoted(self.path)}` again")
        return self._merged()[1]

    def load_verdicts(self, out: str = "") -> list[dict]:
        """verdicts[-OUT].jsonl, checked for the fields and keys a report needs."""
        path, flag = self.verdicts_file(out), f" --out {out}" if out else ""
        if not path.exists():
            raise RunDirError(f"{path}: no such file; run `lcr judge {quoted(self.path)}{flag}` "
                              "first")
        read = read_jsonl(path)
        if read.bad_lines:
            line, why = read.bad_lines[0]
            raise RunDirError(
                f"{path}: {len(read.bad_lines)} unreadable line(s), first line {line}: {why}; "
                f"the file is written whole, so run `lcr judge {quoted(self.path)}{flag}` "
                "again")
        if not read.records:
            raise RunDirError(f"{path}: no verdict records; run "
                              f"`lcr judge {quoted(self.path)}{flag}`")
        seen = set()
        for i, rec in enumerate(read.records, start=1):
            missing = [f for f in VERDICT_FIELDS if f not in rec]
            if missing:
                raise RunDirError(f"{path}: record {i} lacks {', '.join(missing)}")
            if rec["key"] in seen:
                raise RunDirError(f"{path}: key {rec['key']} appears twice")
            seen.add(rec["key"])
        return read.records

    def judge_done(self, shard: int, out: str, units: list[dict], same_judge) -> dict | None:
        """A judge shard's marker, if it covers these answers, `same_judge(marker)`, the
        official answers as they are now, and its file still holds what it vouched for."""
        info = read_done(self.judge_marker(shard, out))
        if not info or info.get("units_sha256") != answers_sha(units) or not same_judge(info):
            return None
        if "officials_sha256" in info and info["officials_sha256"] != officials_sha(
                units, self.official_answers()):
            return None
        if "sha256" in info and not _holds(self.judge_file(shard, out), info["sha256"]):
            return None
        return info

    def official_answers(self) -> dict[str, str]:
        return {q["question_id"]: q.get("answer") or "" for q in self.load_questions()}
