"""The `lcr` command: plan, submit, watch, rerun, merge, judge, report, compare, bench, demo.

    lcr plan jobs/demo.toml --set shards.count=3
    lcr submit jobs/llama31-8b-aalcr.toml --set "sampling.seeds=[0,1,2]"
    lcr status shards/llama31-8b-aalcr

Errors in configuration or data end in one clear message (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from lcr.config import ConfigError, describe

EPILOG_KEYS = "configuration keys and defaults (override with --set section.key=value):\n"


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config value (TOML syntax, e.g. --set 'sampling.seeds=[0,1]')",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lcr", description=__doc__, formatter_class=Formatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name, help_, keys=False):
        sp = sub.add_parser(name, help=help_, description=help_, formatter_class=Formatter,
                            epilog=(EPILOG_KEYS + describe()) if keys else None)
        _add_set(sp)
        return sp

    sp = cmd("plan", "prepare and plan a run; print shards, loads and the GPU-time estimate",
             keys=True)
    sp.add_argument("config", help="run configuration (TOML), e.g. jobs/demo.toml")
    sp.add_argument("--force", action="store_true",
                    help="re-plan a run directory that holds a different configuration")

    sp = cmd("submit", "plan, then submit generate array -> merge -> judge array -> report",
             keys=True)
    sp.add_argument("config", help="run configuration (TOML)")
    sp.add_argument("--force", action="store_true", help="as for plan")
    sp.add_argument("--dry-run", action="store_true",
                    help="plan and print each stage's sbatch script; submit nothing")

    sp = cmd("status", "per stage and shard: done / running / failed / missing")
    sp.add_argument("run_dir")

    sp = cmd("rerun", "resubmit only the shards that are not done, and re-chain what follows")
    sp.add_argument("run_dir")
    sp.add_argument("--dry-run", action="store_true", help="say what would be submitted")

    sp = cmd("merge", "merge and deduplicate the generation shards into merged.jsonl")
    sp.add_argument("run_dir")
    sp.add_argument("--submit", action="store_true", help="submit as a Slurm job instead")

    sp = cmd("judge", "judge the merged answers (all judge shards, then verdicts.jsonl)")
    sp.add_argument("run_dir")
    sp.add_argument("--out", default="", help="name for a re-judge: judge-OUT/, verdicts-OUT.jsonl")
    sp.add_argument("--shard", type=int, default=None, help="run one judge shard only")
    sp.add_argument("--finalize", action="store_true", help="only write verdicts from shards")
    sp.add_argument("--retry-errors", action="store_true",
                    help="ask the judge again for units whose request failed (endpoint errors)")
    sp.add_argument("--submit", action="store_true", help="submit as a Slurm array instead")

    sp = cmd("report", "accuracy with cluster-bootstrap intervals; several runs pool as seeds")
    sp.add_argument("run_dirs", nargs="+")
    sp.add_argument("--out", default="", help="read verdicts-OUT.jsonl, write report-OUT.*")
    sp.add_argument("--force", action="store_true", help="pool runs whose settings differ")

    sp = cmd("compare", "paired difference of accuracy between two runs, with its interval")
    sp.add_argument("run_a")
    sp.add_argument("run_b")
    sp.add_argument("--force", action="store_true", help="compare runs whose settings differ")

    sp = cmd("bench", "engine performance on an AA-LCR-shaped workload (GPU)", keys=True)
    sp.add_argument("config", nargs="?", default=None, help="engine/model config (TOML)")
    sp.add_argument("--scale", type=float, default=1.0,
                    help="shrink the workload: fraction of sets and of document length")
    sp.add_argument("--policies", default="document_set,round_robin,contiguous,random,no_reuse",
                    help="sharding policies to measure, comma-separated")
    sp.add_argument("--shards", type=int, default=4, help="shards per policy")
    sp.add_argument("--layouts", default="",
                    help="node layouts to time on the whole workload, replicas x TP, e.g. "
                         "'4x1,2x2,1x4' (run before the policies; --policies '' skips those)")
    sp.add_argument("--run-dir", default=None,
                    help="take question and set lengths from this prepared run (its "
                         "questions.jsonl) instead; jobs/bench-aalcr-real holds the real "
                         "AA-LCR lengths")
    sp.add_argument("--output-tokens", default=None, metavar="N|lognormal:MEDIAN:SIGMA:MAX",
                    help="tokens each answer decodes (ignore_eos): a fixed N, or a log-normal "
                         "length per unit capped at MAX (the budget); default: "
                         "sampling.max_new_tokens")
    sp.add_argument("--like", default=None, metavar="JOB",
                    help="take sampling.seeds, n and max_new_tokens from this job file, e.g. "
                         "jobs/llama31-8b-aalcr.toml")
    sp.add_argument("--calibrate", action="store_true",
                    help="measure prefill and decode steps first, fit the [cost] constants "
                         "(printed) and predict with them")
    sp.add_argument("--calibrate-steps", type=int, default=128,
                    help="decode steps per calibration measurement")
    sp.add_argument("--calibration", default=None, metavar="FILE",
                    help="predict with the constants and measurements of an earlier "
                         "--calibrate run on the same machine (its OUT/calibration.json)")
    sp.add_argument("--no-floor", action="store_true",
                    help="skip the bandwidth probe and the floor")
    sp.add_argument("--engine-set", action="append", default=[], metavar="KEY=VALUE;...",
                    help="an engine variant to measure (repeatable), e.g. "
                         "\"max_num_batched_tokens=32768\" or \"kv_cache_dtype='fp8'\"")
    sp.add_argument("--out", default=None, help="work folder (default /tmp/lcr-bench)")
    sp.add_argument("--json", default=None, help="also write the results to this JSON file")

    sp = cmd("demo", "the whole pipeline on the bundled sample data with a tiny local model",
             keys=True)
    sp.add_argument("--executor", choices=["auto", "slurm", "local"], default="auto",
                    help="auto: the local Slurm cluster when it can be started, else local")
    sp.add_argument("--config", default=None, help="demo config (default: jobs/demo.toml)")
    return p


def _plan(args) -> int:
    from lcr.config import load_config
    from lcr.plan import plan_run, plan_table

    cfg = load_config(args.config, args.overrides)
    run_dir, plan, questions = plan_run(cfg, force=args.force)
    print(f"run directory: {run_dir.path}")
    print(f"{len(questions)} questions x {len(cfg.sampling.seeds)} seeds x {cfg.sampling.n} "
          f"samples = {plan['n_units']} units in {len(plan['shards'])} shards")
    print(plan_table(plan, questions, cfg))
    return 0


def _report(args) -> int:
    from lcr.report import run_report

    print(run_report(args.run_dirs, force=args.force, out=args.out))
    return 0


def _compare(args) -> int:
    from lcr.report import run_compare

    print(run_compare(args.run_a, args.run_b, force=args.force))
    return 0


def _merge(args) -> int:
    if args.submit:
        from lcr.slurm import submit_stage

        return submit_stage(args.run_dir, "merge", args.overrides)
    from lcr.merge import merge_run

    result = merge_run(args.run_dir)
    print(result.summary())
    return 0 if result.complete else 1


def _judge(args) -> int:
    if args.submit:
        from lcr.slurm import submit_stage

        return submit_stage(args.run_dir, "judge", args.overrides, out=args.out)
    from lcr.judge import run_judge_cli

    return run_judge_cli(args.run_dir, args.overrides, args.out, shard=args.shard,
                         finalize=args.finalize, retry_errors=args.retry_errors)


def _slurm(args) -> int:
    from lcr import slurm

    if args.command == "submit":
        return slurm.submit(args.config, args.overrides, force=args.force, dry_run=args.dry_run)
    if args.command == "status":
        return slurm.status(args.run_dir, args.overrides)
    return slurm.rerun(args.run_dir, args.overrides, dry_run=args.dry_run)


def _bench(args) -> int:
    from lcr.bench import run_bench

    return run_bench(args)


def _demo(args) -> int:
    from lcr.demo import run_demo

    return run_demo(args.executor, args.overrides, config=args.config)


HANDLERS = {
    "plan": _plan, "submit": _slurm, "status": _slurm, "rerun": _slurm, "merge": _merge,
    "judge": _judge, "report": _report, "compare": _compare, "bench": _bench, "demo": _demo,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from lcr.data import DataError
    from lcr.io import StorageError
    from lcr.slurm import SlurmError, StageError

    errors: tuple[type[BaseException], ...] = (ConfigError, DataError, FileNotFoundError,
                                               StorageError, SlurmError)
    try:
        from lcr.report import ReportError

        errors += (ReportError,)
    except ImportError:  # pragma: no cover
        pass
    try:
        from lcr.io import LockedError

        return HANDLERS[args.command](args)
    except LockedError as e:
        print(f"lcr {args.command}: {e}", file=sys.stderr)
        return 3
    except StageError as e:  # the jobs' own errors, one line each, and the way on
        print(f"lcr {args.command}: {e}", file=sys.stderr)
        return 1
    except errors as e:
        print(f"lcr {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
