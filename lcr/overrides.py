"""What `--set` may change once a run is planned (rerun, status, judge, merge --submit), and
what the commands that read no job file take (report, compare, coverage: [report]; none).

    lcr rerun shards/demo --set slurm.time=30            # how the work runs: may change
    lcr rerun shards/demo --set sampling.temperature=1   # what the records mean: refused, exit 2

Settings that decide how and where the work runs may change; everything else decides what the
records mean, and changing it needs a new run.name, or `lcr plan --force` (records made under
the old settings are then ignored).
"""

from __future__ import annotations

import copy

from lcr.config import Config, ConfigError, apply_values, parse_override, validate

ALL_KEYS = None
CHANGEABLE_AFTER_PLANNING: dict[str, tuple[str, ...] | None] = {
    "slurm": ALL_KEYS, "judge": ALL_KEYS, "report": ALL_KEYS, "debug": ALL_KEYS,
    "cost": ALL_KEYS,
    "engine": ("tensor_parallel_size", "replicas", "gpu_memory_utilization",
               "kv_cache_memory_bytes", "enable_prefix_caching", "enable_chunked_prefill",
               "max_num_batched_tokens", "max_num_seqs", "enforce_eager", "batch_sets",
               "compile_cache", "seed", "shared_prefix_attention"),
}


def changeable(section: str, key: str) -> bool:
    if section not in CHANGEABLE_AFTER_PLANNING:
        return False
    keys = CHANGEABLE_AFTER_PLANNING[section]
    return keys is ALL_KEYS or key in keys


def fixed_differences(old: Config, new: Config) -> list[str]:
    """`section.key: old -> new` for every key that differs and may not change after planning
    (run.name and run.root name the directory: they are the same by construction)."""
    a, b = old.to_dict(), new.to_dict()
    return [f"{section}.{key}: {a[section].get(key)!r} -> {value!r}"
            for section, values in b.items() if section != "run"
            for key, value in values.items()
            if not changeable(section, key) and a[section].get(key) != value]


def sealed_settings(cfg: Config) -> dict:
    """{section: {key: value}} of every key fixed once the run is planned: plan.json keeps
    them, and every stage refuses a config.toml that no longer holds them (RunDir)."""
    return {section: {k: v for k, v in values.items() if not changeable(section, k)}
            for section, values in cfg.to_dict().items() if section != "run"}


def changeable_text() -> str:
    """"slurm.*, judge.*, ..., engine.{tensor_parallel_size,...}": what may change."""
    return ", ".join(f"{s}.*" if k is ALL_KEYS else f"{s}.{{{','.join(k)}}}"
                     for s, k in CHANGEABLE_AFTER_PLANNING.items())


def override_planned(cfg: Config, overrides, where: str) -> Config:
    """Apply `--set` overrides to a planned run's config: only changeable keys, validated."""
    for text in overrides:
        data = parse_override(text)
        (section, values), = data.items()
        (key, _), = values.items()
        if not changeable(section, key):
            raise ConfigError(
                f"--set {text}: {section}.{key} is fixed once {where} is planned (it decides "
                f"what its records mean); what may change: {changeable_text()}. For a different "
                f"{section}.{key}, plan a new run (another run.name)")
        apply_values(cfg, data, f"--set {text}")
    validate(cfg)
    return cfg


# What --set may change for the commands that read no job file and no planned run's chain
# (those take the keys above): the sections or keys each reads, and what to say otherwise.
SET_SCOPES: dict[str, tuple[tuple[str, ...], str]] = {
    "report": (("report",), "it reads only [report]"),
    "compare": (("report",), "it reads only [report]"),
    "coverage": (("report.ci_level",), "it simulates at report.ci_level and reads nothing else"),
    "export": ((), "it copies the run's files and reads no setting"),
    "merge": ((), "it reads only the run's files; `lcr merge RUN --submit --set slurm....` "
                  "sets the jobs of a submitted merge"),
    "generate": ((), "its job reads the run's config.toml; `lcr rerun RUN --set ...` changes "
                     "what may change"),
}


def check_scope(command: str, overrides: list[str]) -> list[str]:
    """Refuse a --set the command cannot apply (an unknown key or a wrong type first, named
    as everywhere); return the overrides."""
    scope, why = SET_SCOPES[command]
    for text in overrides:
        apply_values(Config(), parse_override(text), f"--set {text}")
        (section, values), = parse_override(text).items()
        (key, _), = values.items()
        if section not in scope and f"{section}.{key}" not in scope:
            takes = ", ".join(f"{x}.*" if "." not in x else x for x in scope)
            raise ConfigError(f"--set {text}: lcr {command} cannot apply {section}.{key} ("
                              + (f"it takes only {takes}: {why})" if scope else f"{why})"))
    return overrides


def with_overrides(cfg: Config, texts=()) -> Config:
    """A copy of `cfg` with `--set` texts applied, validated (the caller checked the scope)."""
    out = copy.deepcopy(cfg)
    for text in texts:
        apply_values(out, parse_override(text), f"--set {text}")
    validate(out)
    return out
