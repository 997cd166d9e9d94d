"""Run configuration: one dataclass per section, loaded from TOML with `--set` overrides.

    cfg = load_config("jobs/demo.toml", ["shards.count=3", "sampling.seeds=[0,1]"])

Unknown sections or keys are errors that list the valid ones; values are type-checked by
the field's annotation, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from lcr.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(InputError, ValueError):
    """A configuration problem, with the offending file, section or key in the message."""


@dataclass
class RunSection:
    name: str = "run"  # run directory name under root; a safe file name
    root: str = "shards"  # folder holding run directories


@dataclass
class DataSection:
    source: str = "hf"  # "hf" (hub snapshot at a pinned revision), "local" (a folder) or "sample"
    repo: str = "ArtificialAnalysis/AA-LCR"  # hub dataset repo id (source = "hf")
    revision: str = "9a77ef56b717057ade24ceab4d273712a0b4f19e"  # pinned hub revision (v1.1)
    path: str = ""  # local snapshot folder (source = "local" or "sample")
    protocol: str = ""  # "" = from revision; "v1.0" or "v1.1" declares it (a private mirror)
    too_long: str = "skip"  # "skip": record as too_long; "truncate": cut the documents' middle
    limit: int = 0  # keep only the first N questions (0 = all); for smoke runs


@dataclass
class ModelSection:
    path: str = "meta-llama/Llama-3.1-8B-Instruct"  # hub id or local folder of the candidate
    tokenizer: str = ""  # tokenizer id or folder; "" = model.path
    system_prompt: str = "none"  # "none" (official) or "reasoning"
    trust_remote_code: bool = False  # passed to transformers and vLLM


@dataclass
class SamplingSection:
    seeds: list[int] = field(default_factory=lambda: [0])  # one unit per question and seed
    n: int = 1  # samples per seed
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling mass
    top_k: int = -1  # -1 = off
    max_new_tokens: int = 2048  # output budget per unit
    ignore_eos: bool = False  # always generate max_new_tokens (benchmarks only)


@dataclass
class ShardsSection:
    count: int = 8  # generate array size (one Slurm task per shard)


@dataclass
class CostSection:
    # Planner cost model, seconds on one GPU (lcr.cost). A prefill of L tokens costs
    # L / prefill_tok_s * (1 + L / attn_tokens); a decode step costs step_s + step_seq_s per
    # sequence + step_ctx_s per million context tokens the sequences attend + step_shared_s per
    # million shared-prefix tokens per set in flight. Fitted by `lcr bench --calibrate` (vLLM
    # 0.26, Llama-3.1-8B shapes, dummy weights, one NVIDIA H200, 2026-11-27); with them the model
    # predicted three workloads within 6% (jobs/PERFORMANCE.md).
    prefill_tok_s: float = 45108.7  # linear prefill rate at short context
    attn_tokens: float = 51783.5  # context length at which attention doubles prefill cost
    step_s: float = 0.004883  # decode step: fixed part (reading the weights)
    step_seq_s: float = 0.0000533  # decode step: per sequence in the batch
    step_ctx_s: float = 0.01559  # decode step: per million context tokens the sequences attend
    step_shared_s: float = 0.02428  # decode step: per million shared-prefix tokens per set
    # The same decode step with shared-prefix attention (engine.shared_prefix_attention): a set
    # of two or more sequences reads its shared prefix once (spa_prefix_s per million prefix
    # tokens per set), and each sequence only its own rest (spa_ctx_s per million tokens).
    # Fitted on the same card on 2026-12-02 (the KV terms held at their read at 4.22 TB/s);
    # with them the model predicted issue 18's three workloads within 10%.
    spa_step_s: float = 0.01318  # fixed part (weights, attention outside the CUDA graphs)
    spa_step_seq_s: float = 0.0000429  # per sequence in the batch
    spa_ctx_s: float = 0.03105  # per million context tokens past each sequence's shared prefix
    spa_prefix_s: float = 0.03105  # per million shared-prefix tokens, once per set in flight
    kv_tokens: int = 891392  # KV cache the planner assumes (H200, 0.9 of memory; an 80 GB H100
    # holds roughly half); generate reads the real one from the engine
    block_tokens: int = 16  # KV block size the planner assumes
    output_tokens: int = 0  # mean answer length for planning; 0 = sampling.max_new_tokens
    engine_start_s: float = 60.0  # engine start with a warm compile cache (36-65 s; cold 92 s)


@dataclass
class EngineSection:
    tensor_parallel_size: int = 1  # GPUs per engine
    replicas: int = 1  # engines per node; replicas * tensor_parallel_size = GPUs per node
    max_model_len: int = 131072  # context window (Llama-3.1: 131072)
    gpu_memory_utilization: float = 0.9  # share of GPU memory vLLM may take
    kv_cache_memory_bytes: int = 0  # fixed KV cache size in bytes (0 = from utilisation)
    enable_prefix_caching: bool = True  # reuse a document set's KV across its questions
    enable_chunked_prefill: bool = True  # off on CPU with seeded sampling (vLLM CPU bug)
    max_num_batched_tokens: int = 16384  # tokens per engine step
    max_num_seqs: int = 256  # concurrent sequences per engine
    kv_cache_dtype: str = "auto"  # "auto" or "fp8"
    dtype: str = "auto"  # weights/activations dtype
    enforce_eager: bool = False  # skip CUDA graphs (faster start, slower decode)
    load_format: str = "auto"  # "dummy" for benchmarks with random weights
    skip_tokenizer_init: bool = False  # token-id prompts only, no detokenising (benchmarks)
    seed: int = 0  # engine seed
    batch_sets: int | str = "auto"  # sets in flight: "auto" = as many as the KV cache holds
    compile_cache: str = "auto"  # "auto": $VLLM_CACHE_ROOT, else RUN_ROOT/.vllm-cache; "": vLLM's
    # Read each document set's shared prefix once per decode step for all its sequences
    # (lcr.shared_prefix): "auto" = where it can run (CUDA, FlashAttention 3), true, or false.
    shared_prefix_attention: bool | str = "auto"


@dataclass
class SlurmSection:
    executor: str = "slurm"  # "slurm", or "local" (this machine, submitit's local executor)
    partition: str = ""  # sbatch --partition
    cpu_partition: str = ""  # partition for merge and report (no GPUs); "" = partition
    account: str = ""  # sbatch --account
    qos: str = ""  # sbatch --qos
    time: int = 240  # minutes per generate task
    nodes: int = 1  # nodes per task: 1 (an engine spans the GPUs of one node)
    gpus_per_node: int = 1  # GPUs per generate task
    cpus_per_task: int = 8  # CPU cores per task
    mem: str = ""  # e.g. "200G"; "" = cluster default
    constraint: str = ""  # sbatch --constraint
    array_parallelism: int = 64  # max simultaneously running array tasks
    exclusive: bool = False  # sbatch --exclusive
    max_requeue: int = 3  # requeues after time-out or preemption
    signal_delay_s: int = 120  # Slurm warns a job this long before its time limit (requeue)
    judge_gpus_per_node: int = 1  # GPUs per judge task (vllm backend)
    judge_time: int = 120  # minutes per judge task
    extra: dict = field(default_factory=dict)  # more sbatch parameters, e.g. {mail_type = "END"}
    setup: list[str] = field(default_factory=list)  # shell lines run before each job


@dataclass
class JudgeSection:
    backend: str = "vllm"  # "vllm", "openai" or "exact"
    model: str = "Qwen/Qwen3-235B-A22B-Instruct-2507"  # judge model (vllm or openai)
    prompt: str = "v1.1"  # AA-LCR judge protocol: "v1.0" or "v1.1"
    prompt_role: str = "user"  # where the filled judge text goes: "user" (official) or "system"
    force: bool = False  # allow a judge protocol that does not match (or an unknown) revision
    shards: int = 1  # judge array size
    tensor_parallel_size: int = 8  # vllm backend
    max_model_len: int = 16384  # vllm backend: judge prompts are short
    kv_cache_memory_bytes: int = 0  # vllm backend; 0 = the [engine] setting
    max_new_tokens: int = 256  # judge output budget
    structured: bool | str = "auto"  # verdicts under structured outputs: "auto", true, false
    max_error_share: float = 0.1  # a judge shard fails if more of its units end in judge errors
    base_url: str = "http://127.0.0.1:8000/v1"  # openai backend endpoint
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key; never stored
    concurrency: int = 8  # openai backend: requests in flight
    max_retries: int = 5  # openai backend: retries per request (429, 5xx, timeouts)
    timeout_s: float = 120.0  # openai backend: per request


@dataclass
class ReportSection:
    bootstrap: int = 10000  # bootstrap resamples
    ci_level: float = 0.95  # interval level
    seed: int = 0  # bootstrap rng seed


@dataclass
class DebugSection:
    fail_shards: list[int] = field(default_factory=list)  # generate shards that raise (tests)
    unit_delay_s: float = 0.0  # sleep after each unit (tests of kills and time limits)


@dataclass
class Config:
    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    shards: ShardsSection = field(default_factory=ShardsSection)
    cost: CostSection = field(default_factory=CostSection)
    engine: EngineSection = field(default_factory=EngineSection)
    slurm: SlurmSection = field(default_factory=SlurmSection)
    judge: JudgeSection = field(default_factory=JudgeSection)
    report: ReportSection = field(default_factory=ReportSection)
    debug: DebugSection = field(default_factory=DebugSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.root) / self.run.name

    def generation_hash(self) -> str:
        """Hash of everything that decides a generation record: data, model, sampling."""
        d = self.to_dict()
        keep = {k: d[k] for k in ("data", "model", "sampling")}
        # data.protocol only labels the answer keys: it changes no generation record.
        keep["data"] = {k: v for k, v in keep["data"].items() if k not in ("path", "protocol")}
        blob = json.dumps(keep, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


JUDGE_BACKENDS = ("vllm", "openai", "exact")  # their behaviour: lcr.backends.BACKENDS
# Keys older lcr versions wrote into config.toml: skipped when a run directory is read,
# refused (with the reason) in a job file or --set.
RETIRED = {"judge.backoff_s": "the openai client paces its own retries"}
RUN_FILES = ("config.toml", "settings.json")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _check_type(where: str, value, annotation):
    """Return value converted to the annotation's type, or raise ConfigError naming `where`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):  # e.g. int | str: the first that fits
        for arm in typing.get_args(annotation):
            try:
                return _check_type(where, value, arm)
            except ConfigError:
                pass
        names = " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(annotation))
        raise ConfigError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (item,) = typing.get_args(annotation)
        if isinstance(value, list):
            return [_check_type(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    elif annotation is dict or origin is dict:
        if isinstance(value, dict):
            return value
    else:  # pragma: no cover - a field type this loader does not know
        raise TypeError(f"unsupported config type {annotation} for {where}")
    name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")


def apply_values(cfg: Config, data: dict, origin: str) -> None:
    """Apply {section: {key: value}} (from a file named by `origin`), type-checked."""
    hints = typing.get_type_hints(Config)
    for section, values in data.items():
        if section not in hints:
            raise ConfigError(
                f"{origin}: unknown section [{section}]; valid sections: {', '.join(hints)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table, got {values!r}")
        obj = getattr(cfg, section)
        fields = typing.get_type_hints(type(obj))
        for key, value in values.items():
            if f"{section}.{key}" in RETIRED and origin.endswith(RUN_FILES):
                continue
            if key not in fields:
                retired = RETIRED.get(f"{section}.{key}")
                raise ConfigError(
                    f"{origin}: {section}.{key} is no longer a setting ({retired})" if retired
                    else f"{origin}: unknown key {section}.{key}; valid keys in [{section}]: "
                    f"{', '.join(fields)}")
            setattr(obj, key, _check_type(f"{origin}: {section}.{key}", value, fields[key]))


def parse_override(text: str) -> dict:
    """'section.key=value' -> {section: {key: value}}; value parsed as TOML, else a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as `data.source=local`
    return {section: {key: value}}


def apply_override(cfg: Config, text: str) -> None:
    """Apply one `--set section.key=value` to `cfg` (type-checked; unknown keys are errors)."""
    apply_values(cfg, parse_override(text), f"--set {text}")


# The range of every numeric key that has one: (lowest, highest), None = open; POSITIVE = more
# than 0. A value outside it is an error naming the key and the range, at plan time and at
# every --set. Floats must also be finite (TOML reads `nan` and `inf`).
POSITIVE = "positive"
AT_LEAST_1, AT_LEAST_0 = (1, None), (0, None)
BOUNDS: dict[str, tuple] = {
    "data.limit": AT_LEAST_0,
    "sampling.n": AT_LEAST_1, "sampling.max_new_tokens": AT_LEAST_1,
    "shards.count": AT_LEAST_1,
    **{f"cost.{k}": AT_LEAST_0 for k in ("step_s", "step_seq_s", "step_ctx_s", "step_shared_s",
                                         "output_tokens", "engine_start_s")},
    "cost.prefill_tok_s": (POSITIVE, None), "cost.attn_tokens": (POSITIVE, None),
    "cost.kv_tokens": AT_LEAST_1, "cost.block_tokens": AT_LEAST_1,
    "engine.tensor_parallel_size": AT_LEAST_1, "engine.replicas": AT_LEAST_1,
    "engine.max_model_len": AT_LEAST_1, "engine.gpu_memory_utilization": (POSITIVE, 1),
    "engine.kv_cache_memory_bytes": AT_LEAST_0, "engine.max_num_batched_tokens": AT_LEAST_1,
    "engine.max_num_seqs": AT_LEAST_1, "engine.seed": AT_LEAST_0,
    "slurm.time": AT_LEAST_1, "slurm.judge_time": AT_LEAST_1,
    "slurm.gpus_per_node": AT_LEAST_0, "slurm.judge_gpus_per_node": AT_LEAST_0,
    "slurm.cpus_per_task": AT_LEAST_1, "slurm.array_parallelism": AT_LEAST_1,
    "slurm.max_requeue": AT_LEAST_0, "slurm.signal_delay_s": AT_LEAST_0,
    "judge.shards": AT_LEAST_1, "judge.tensor_parallel_size": AT_LEAST_1,
    "judge.max_model_len": AT_LEAST_1, "judge.kv_cache_memory_bytes": AT_LEAST_0,
    "judge.max_new_tokens": AT_LEAST_1, "judge.concurrency": AT_LEAST_1,
    "judge.max_retries": AT_LEAST_0, "judge.timeout_s": (POSITIVE, None),
    "report.bootstrap": AT_LEAST_1,
    "debug.unit_delay_s": AT_LEAST_0,
}


def check_bounds(cfg: Config) -> None:
    """Every float finite and every numeric key within BOUNDS; the error names both."""
    d = cfg.to_dict()
    for section, values in d.items():
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{section}.{key} = {value}; must be a finite number")
    for dotted, (low, high) in BOUNDS.items():
        section, key = dotted.split(".")
        value = d[section][key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # the str arm of an int | str key (engine.batch_sets = "auto")
        too_low = value <= 0 if low == POSITIVE else value < low
        if too_low or (high is not None and value > high):
            rule = "more than 0" if low == POSITIVE else f"at least {low}"
            rule += f" and at most {high}" if high is not None else ""
            raise ConfigError(f"{dotted} = {value}; must be {rule}")


def validate(cfg: Config) -> None:
    """Cross-field checks, each naming its keys."""
    if not _SAFE_NAME.match(cfg.run.name):
        raise ConfigError(
            f"run.name {cfg.run.name!r} is not a safe file name "
            "(letters, digits, '.', '_', '-'; not starting with '.' or '-')"
        )
    choices = {
        "data.source": (cfg.data.source, ("hf", "local", "sample")),
        "data.too_long": (cfg.data.too_long, ("skip", "truncate")),
        "model.system_prompt": (cfg.model.system_prompt, ("none", "reasoning")),
        "judge.backend": (cfg.judge.backend, JUDGE_BACKENDS),
        "judge.prompt": (cfg.judge.prompt, ("v1.0", "v1.1")),
        "judge.prompt_role": (cfg.judge.prompt_role, ("user", "system")),
        "slurm.executor": (cfg.slurm.executor, ("auto", "slurm", "local")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key} = {value!r}; expected one of {', '.join(allowed)}")
    check_protocol(cfg)
    check_judge(cfg)
    check_bounds(cfg)
    if not cfg.sampling.seeds:
        raise ConfigError("sampling.seeds is empty; give at least one seed, e.g. [0]")
    if len(set(cfg.sampling.seeds)) != len(cfg.sampling.seeds):
        raise ConfigError(f"sampling.seeds {cfg.sampling.seeds} has duplicates")
    if min(cfg.sampling.seeds) < 0:
        raise ConfigError(f"sampling.seeds {cfg.sampling.seeds}: seeds must be 0 or more")
    if cfg.data.source in ("local", "sample") and not cfg.data.path and cfg.data.source == "local":
        raise ConfigError("data.source = 'local' needs data.path (the snapshot folder)")
    if cfg.slurm.nodes != 1:
        raise ConfigError(f"slurm.nodes = {cfg.slurm.nodes}; lcr runs each engine on one node "
                          "(multi-node engines are not supported): use more shards instead")
    gpus = cfg.engine.replicas * cfg.engine.tensor_parallel_size
    if cfg.slurm.gpus_per_node and gpus != cfg.slurm.gpus_per_node:
        raise ConfigError(
            f"engine.replicas ({cfg.engine.replicas}) x engine.tensor_parallel_size "
            f"({cfg.engine.tensor_parallel_size}) = {gpus} must equal slurm.gpus_per_node "
            f"({cfg.slurm.gpus_per_node}); set slurm.gpus_per_node = 0 on a machine without GPUs"
        )
    for key, value in [*dataclasses.asdict(cfg.slurm).items(),
                       *((f"extra.{k}", v) for k, v in cfg.slurm.extra.items())]:
        # These values become #SBATCH lines: a line break would smuggle in another one.
        text = "\n".join(value) if isinstance(value, list) else str(value)
        if key not in ("setup", "extra") and any(c in text for c in "\n\r\0"):
            raise ConfigError(f"slurm.{key} = {value!r}: line breaks are not allowed")
    for key in cfg.slurm.extra:
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", key):
            raise ConfigError(f"slurm.extra key {key!r} is not an sbatch option name")
    spa = cfg.engine.shared_prefix_attention
    if spa not in ("auto", True, False) or not isinstance(spa, (bool, str)):
        raise ConfigError(f"engine.shared_prefix_attention = {spa!r}; expected \"auto\", "
                          "true or false")
    bs = cfg.engine.batch_sets
    if bs != "auto" and not (isinstance(bs, int) and bs >= 1):
        raise ConfigError(f"engine.batch_sets = {bs!r}; expected \"auto\" or a whole number >= 1")
    s = cfg.sampling
    if s.temperature < 0:
        raise ConfigError(f"sampling.temperature = {s.temperature}; must be 0 (greedy) or more")
    if not 0 < s.top_p <= 1:
        raise ConfigError(f"sampling.top_p = {s.top_p}; must be in (0, 1]")
    if s.top_k == 0 or s.top_k < -1:
        raise ConfigError(f"sampling.top_k = {s.top_k}; -1 (off) or at least 1")
    if s.max_new_tokens >= cfg.engine.max_model_len:
        raise ConfigError(f"sampling.max_new_tokens = {s.max_new_tokens} leaves no room for a "
                          f"prompt in engine.max_model_len = {cfg.engine.max_model_len}")
    if not 0 < cfg.report.ci_level < 1:
        raise ConfigError(f"report.ci_level = {cfg.report.ci_level}; must be between 0 and 1")


def check_judge(cfg: Config) -> None:
    """judge.structured and judge.max_error_share, each naming its key."""
    j = cfg.judge
    if j.structured not in ("auto", True, False):
        raise ConfigError(f"judge.structured = {j.structured!r}; expected \"auto\", true or false")
    if j.structured is True and j.backend == "exact":
        raise ConfigError("judge.structured = true, but judge.backend = \"exact\" asks no model "
                          "(nothing to decode under structured outputs); set judge.structured = "
                          "\"auto\" or false, or judge.backend = \"vllm\" or \"openai\"")
    if not 0 <= j.max_error_share <= 1:
        raise ConfigError(f"judge.max_error_share = {j.max_error_share}; must be between 0 and 1 "
                          "(the share of a shard's units that may end in judge errors)")


def data_protocol(data: DataSection) -> str | None:
    """The AA-LCR protocol the data follows: declared by data.protocol, else known from the
    hub revision; None for a local or sample snapshot whose revision is only a label."""
    from lcr.prompts import REVISIONS, protocol_for_revision

    if data.source != "hf" and not data.protocol and data.revision not in REVISIONS:
        return None
    try:
        return protocol_for_revision(data.revision, data.protocol)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_protocol(cfg: Config) -> None:
    """The judge prompt must match the data's protocol (v1.1 changed answer keys too)."""
    try:
        want = data_protocol(cfg.data)
    except ConfigError as e:
        if cfg.judge.force and not cfg.data.protocol:
            return  # judge.force: the user vouches for the protocol of an unknown revision
        raise ConfigError(f"{e} (or judge.force = true to skip this check)") from None
    if want and cfg.judge.prompt != want and not cfg.judge.force:
        source = (f"data.protocol = {cfg.data.protocol!r}" if cfg.data.protocol
                  else f"data.revision = {cfg.data.revision!r}")
        raise ConfigError(
            f"judge.prompt = {cfg.judge.prompt!r} does not match {source}, which goes with "
            f"judge.prompt = {want!r}. Set judge.prompt = {want!r}, or judge.force = true to "
            "judge with the other protocol on purpose."
        )


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    cfg = Config()
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(_job_text(path))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a folder; give a job file, e.g. jobs/demo.toml"
                              ) from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        apply_values(cfg, data, str(path))
    for text in overrides or []:
        apply_override(cfg, text)
    validate(cfg)
    return cfg


def _job_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):  # Windows editors add one; TOML does not allow it
        raise ConfigError(f"{path}: starts with a UTF-8 byte-order mark (BOM), which TOML does "
                          "not allow; save it as UTF-8 without BOM (e.g. `sed -i "
                          "'1s/^\\xEF\\xBB\\xBF//' FILE`)")
    return raw.decode("utf-8")


def config_from_dict(data: dict, origin: str) -> Config:
    cfg = Config()
    apply_values(cfg, data, origin)
    return cfg


def valid_keys() -> list[str]:
    hints = typing.get_type_hints(Config)
    return [f"{s}.{k}" for s, cls in hints.items() for k in typing.get_type_hints(cls)]
