"""`lcr bench --layouts`: one node's GPUs as R engines of T GPUs each, on the whole workload.

    lcr bench jobs/bench-llama31-8b.toml --scale 0.33 --layouts 4x1,2x2,1x4 --policies ''

Each layout runs the workload as one shard through `lcr.generate.run_shard` (R replica
processes, the shard's sets split between them by the cost model), beside the model's
prediction for each replica part.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path

from lcr.config import Config
from lcr.io import atomic_write_json, atomic_write_text
from lcr.rundir import RunDir


def fresh_run_dir(path: Path, base: RunDir, cfg: Config) -> RunDir:
    """An empty run directory sharing the workload's prompts and questions, with `cfg`."""
    from lcr.provenance import config_toml

    rd = RunDir(path)
    if rd.path.exists():
        shutil.rmtree(rd.path)
    rd.path.mkdir(parents=True)
    (rd.path / "prompts").symlink_to((base.path / "prompts").resolve())
    shutil.copy(base.questions_file, rd.questions_file)
    atomic_write_text(rd.config_file, config_toml(cfg))
    return rd


def run_layouts(root: Path, base: RunDir, cfg: Config, questions: list[dict],
                layouts: list[str]) -> list[dict]:
    """The whole workload on one node as R engines of T GPUs ("RxT"), via run_shard's replicas."""
    from lcr.cost import replica_parts, units_cost
    from lcr.generate import run_shard
    from lcr.plan import make_plan

    qinfo = {q["question_id"]: q for q in questions}
    out = []
    for layout in layouts:
        r, t = (int(x) for x in layout.lower().split("x"))
        lcfg = dataclasses.replace(cfg, engine=dataclasses.replace(
            cfg.engine, replicas=r, tensor_parallel_size=t), shards=dataclasses.replace(
            cfg.shards, count=1))
        lcfg.slurm.gpus_per_node = r * t
        rd = fresh_run_dir(root / f"layout-{r}x{t}", base, lcfg)
        plan = make_plan(questions, lcfg)
        atomic_write_json(rd.plan_file, plan)
        model = [units_cost(p, qinfo, lcfg).seconds
                 for p in replica_parts(plan["shards"][0], r, qinfo, lcfg)]
        t0 = time.time()
        info = run_shard(rd.path, 0, parts=r if r > 1 else None)
        wall = time.time() - t0
        parts = info.get("parts") or [info]
        start = max(p.get("engine_start_s", 0.0) for p in parts)
        run_s = max(p["elapsed_s"] - p.get("engine_start_s", 0.0) for p in parts)
        out.append({"layout": f"{r}x{t}", "wall_s": round(wall, 1),
                    "engine_start_s": round(start, 1), "run_s": round(run_s, 1),
                    "part_run_s": [round(p["elapsed_s"] - p.get("engine_start_s", 0), 1)
                                   for p in parts],
                    "part_model_s": [round(m, 1) for m in model],
                    "cache_hit": info.get("cache_hit")})
        print(f"  layout {r}x{t}: {out[-1]}", file=sys.stderr, flush=True)
    return out
