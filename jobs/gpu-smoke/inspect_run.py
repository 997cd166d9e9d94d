"""What a GPU smoke run wrote, and how long each stage took (from the files themselves).

    python3 jobs/gpu-smoke/inspect_run.py RUN_DIR START_EPOCH

Stage times come from the modification times of each stage's last file (plan.json, the
generate done markers, merged.done, verdicts.jsonl, report.json) and the engine starts from
the done markers. It also checks the promise of a run directory: every planned unit appears
exactly once in merged.jsonl and in verdicts.jsonl, and no key is written twice in a shard.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path


def keys(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line)["key"])
        except (ValueError, KeyError):
            pass
    return out


def main(run: str, start: float) -> int:
    rd = Path(run)
    plan = json.loads((rd / "plan.json").read_text())
    planned = [u["key"] for s in plan["shards"] for u in s["units"]]
    marks = [("plan", rd / "plan.json"),
             *((f"generate {p.stem}", p) for p in sorted((rd / "generate").glob("*.done"))),
             ("merge", rd / "merged.done"),
             *((f"judge {p.stem}", p) for p in sorted((rd / "judge").glob("*.done"))),
             ("verdicts", rd / "verdicts.jsonl"), ("report", rd / "report.json")]
    t = start
    for name, path in marks:
        if not path.exists():
            print(f"{name:<28} missing")
            continue
        end = path.stat().st_mtime
        extra = ""
        if path.suffix == ".done" and name.startswith(("generate", "judge")):
            d = json.loads(path.read_text())
            extra = f" (engine start {d.get('engine_start_s')} s, {d.get('records')} records"
            if name.startswith("generate"):
                extra += (f", attention {d.get('shared_prefix_attention')!r}, decode "
                          f"{d.get('output_tok_s')} tok/s")
            extra += ")"
        print(f"{name:<28} {end - t:7.1f} s{extra}")
        t = end
    print(f"{'whole chain':<28} {t - start:7.1f} s")
    shard_keys = [k for f in sorted((rd / "generate").glob("*.jsonl")) for k in keys(f)]
    merged, verdicts = keys(rd / "merged.jsonl"), keys(rd / "verdicts.jsonl")
    dupes = [k for k, n in collections.Counter(shard_keys).items() if n > 1]
    ok = sorted(planned) == sorted(merged) == sorted(verdicts) and len(set(planned)) == len(
        planned)
    print(f"units planned {len(planned)}, generate records {len(shard_keys)} (keys written "
          f"twice: {len(dupes)}), merged {len(merged)}, verdicts {len(verdicts)}: "
          + ("every planned unit exactly once" if ok else "MISMATCH"))
    report = json.loads((rd / "report.json").read_text())
    print("report:", {k: report.get(k) for k in ("accuracy", "ci_low", "ci_high", "n_units",
                                                  "n_invalid", "n_too_long")})
    return 0 if ok and not dupes else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
