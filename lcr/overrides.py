"""What `--set` may change once a run is planned (rerun, status, judge, merge --submit).

    lcr rerun shards/demo --set slurm.time=30            # how the work runs: may change
    lcr rerun shards/demo --set sampling.temperature=1   # what the records mean: refused, exit 2

Settings that decide how and where the work runs may change; everything else decides what the
records mean, and changing it needs a new run.name, or `lcr plan --force` (records made under
the old settings are then ignored).
"""

from __future__ import annotations

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


def override_planned(cfg: Config, overrides, where: str) -> Config:
    """Apply `--set` overrides to a planned run's config: only changeable keys, validated."""
    for text in overrides:
        data = parse_override(text)
        (section, values), = data.items()
        (key, _), = values.items()
        if not changeable(section, key):
            allowed = ", ".join(f"{s}.*" if k is ALL_KEYS else f"{s}.{{{','.join(k)}}}"
                                for s, k in CHANGEABLE_AFTER_PLANNING.items())
            raise ConfigError(
                f"--set {text}: {section}.{key} is fixed once {where} is planned (it decides "
                f"what its records mean); what may change: {allowed}. For a different "
                f"{section}.{key}, plan a new run (another run.name)")
        apply_values(cfg, data, f"--set {text}")
    validate(cfg)
    return cfg
