"""The `lcr` command: plan, submit, status, rerun, the stages one by one, report, compare, ...

    lcr plan jobs/demo.toml --set shards.count=3
    lcr submit jobs/llama31-8b-aalcr.toml --set "sampling.seeds=[0,1,2]"
    lcr status shards/llama31-8b-aalcr
    lcr generate shards/llama31-8b-aalcr --shard 3      # one stage's shard, here and now

Exit codes, the same for every command, carried by the error classes (lcr/errors.py): 0 done;
1 a stage ran and failed (merge incomplete, judge endpoint down, a job of the local executor
failed); 2 the configuration or an input is wrong (one line naming the file, line or key, and
the way on); 3 a lock is held (another process writes that shard, or submits for that run);
130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys

from lcr.config import Config
from lcr.errors import INTERRUPTED, LcrError, exit_code
from lcr.overrides import check_scope

HELP_KEYS = "configuration keys, defaults and meaning (override with --set section.key=value):\n"


def describe() -> str:
    """Every key with its default and the comment that documents it (units, allowed values)."""
    lines = []
    for section in dataclasses.fields(Config):
        cls = section.default_factory
        comments = {}
        for src in inspect.getsource(cls).splitlines():
            name, _, rest = src.strip().partition(":")
            if "#" in rest and name.isidentifier():
                comments[name] = rest.split("#", 1)[1].strip()
        lines.append(f"[{section.name}]")
        for f in dataclasses.fields(cls):
            default = getattr(cls(), f.name)
            note = f"  # {comments[f.name]}" if f.name in comments else ""
            lines.append(f"  {f.name} = {json.dumps(default)}{note}")
    return "\n".join(lines)


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _number(kind, low=None, high=None, low_open=False):
    """An argparse type: a number of `kind` within [low, high] ((low, high] with low_open)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if ((low is not None and (value <= low if low_open else value < low))
                or (high is not None and value > high)):
            rule = f"more than {low}" if low_open else f"at least {low}"
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: must be {rule}"
                + (f" and at most {high}" if high is not None else ""))
        return value
    parse.__name__ = kind.__name__
    return parse


def _numbers(kind, **bounds):
    """Comma-separated numbers, each checked as by _number."""
    one = _number(kind, **bounds)
    return lambda text: [one(x) for x in text.split(",")]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lcr", description=__doc__, formatter_class=Formatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name, help_, keys=False, run=False):
        sp = sub.add_parser(name, help=help_, description=help_, formatter_class=Formatter,
                            epilog=(HELP_KEYS + describe()) if keys else None)
        sp.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override a config value (TOML syntax, e.g. --set "
                             "'sampling.seeds=[0,1]'); on a planned run only what may change")
        if run:
            sp.add_argument("run_dir", help="run directory made by `lcr plan`")
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
    sp = cmd("status", "per stage and shard: done / running / failed / missing", run=True)
    _out_arg(sp, "its judge and report shards")
    sp = cmd("rerun", "resubmit only the shards that are not done, and re-chain what follows",
             run=True)
    sp.add_argument("--dry-run", action="store_true", help="say what would be submitted")
    _out_arg(sp, "finish its judge and report; generate and merge as for any rerun")
    sp = cmd("generate", "run one generate shard here (what a Slurm array task runs)", run=True)
    sp.add_argument("--shard", type=int, required=True, help="shard index in plan.json")
    sp.add_argument("--part", type=int, default=None, help=argparse.SUPPRESS)  # replicas
    sp.add_argument("--parts", type=int, default=None, help=argparse.SUPPRESS)
    sp = cmd("merge", "merge and deduplicate the generation shards into merged.jsonl", run=True)
    sp.add_argument("--submit", action="store_true",
                    help="submit merge -> judge -> report as Slurm jobs instead")
    sp = cmd("judge", "judge the merged answers (all judge shards, then verdicts.jsonl)",
             run=True)
    _out_arg(sp, "judge into judge-NAME/ and verdicts-NAME.jsonl, e.g. with another "
                 "--set judge.model")
    what = sp.add_mutually_exclusive_group()
    what.add_argument("--shard", type=int, default=None, help="run one judge shard only")
    what.add_argument("--finalize", action="store_true", help="only write verdicts from shards")
    sp.add_argument("--retry-errors", action="store_true",
                    help="ask the judge again for units that ended in judge errors (a failed "
                         "request or an unusable reply), in shards already done too")
    sp.add_argument("--retry-truncated", type=int, default=0, metavar="N",
                    help="ask again, with N output tokens, the units whose judge reply was cut "
                         "at judge.max_new_tokens before a verdict")
    sp.add_argument("--submit", action="store_true", help="submit as a Slurm array instead")
    sp = cmd("report", "accuracy with small-sample cluster intervals; several runs pool as "
                       "seeds (a pooled report gets a name of its own)")
    sp.add_argument("run_dirs", nargs="+")
    _out_arg(sp, "read verdicts-NAME.jsonl, write report-NAME.*")
    sp.add_argument("--force", action="store_true", help="pool runs whose settings differ")
    sp = cmd("compare", "paired difference of accuracy between two runs, with its interval")
    sp.add_argument("run_a")
    sp.add_argument("run_b")
    _out_arg(sp, "compare verdicts-NAME.jsonl of both runs")
    sp.add_argument("--force", action="store_true", help="compare runs whose settings differ")
    sp = cmd("export", "one row per judged answer as Parquet (opens with datasets)", run=True)
    _out_arg(sp, "read verdicts-NAME.jsonl, write answers-NAME.parquet")
    sp.add_argument("--to", default=None, help="file (or folder) to write (default "
                                               "RUN/answers.parquet)")
    _bench_args(cmd("bench", "engine performance on an AA-LCR-shaped workload (GPU)", keys=True))
    sp = cmd("demo", "the whole pipeline on the bundled sample data with a tiny local model",
             keys=True)
    sp.add_argument("--executor", choices=["auto", "slurm", "local"], default="auto",
                    help="auto: the local Slurm cluster when it can be started, else local")
    sp.add_argument("--config", default=None, help="demo config (default: jobs/demo.toml)")
    sp = cmd("coverage", "simulate how often the reported interval (at --set "
                         "report.ci_level) covers the truth on AA-LCR's set sizes")
    sp.add_argument("--reps", type=_number(int, 1), default=5000,
                    help="simulated evaluations per cell")
    fraction = dict(low=0.0, high=0.999999, low_open=True)
    sp.add_argument("--truth", type=_numbers(float, **fraction), default="0.03,0.3,0.97",
                    help="true accuracies, comma-separated")
    sp.add_argument("--icc", type=_numbers(float, **fraction), default="0.2",
                    help="intra-set correlations, comma-separated")
    sp.add_argument("--seeds", type=_numbers(int, low=1), default="1,3",
                    help="seeds per question")
    sp.add_argument("--bootstrap", action="store_true", help="also the percentile bootstrap")
    sp.add_argument("--seed", type=int, default=0, help="simulation seed")
    return p


def _out_arg(sp, what: str) -> None:
    """--out NAME means one thing in every command: the re-judge named NAME, whose files are
    judge-NAME/, verdicts-NAME.jsonl, report-NAME.* and answers-NAME.parquet."""
    sp.add_argument("--out", default="", metavar="NAME",
                    help=f"the re-judge named NAME: {what}; none: the run's own judge")


def _bench_args(sp) -> None:
    sp.add_argument("config", nargs="?", default=None, help="engine/model config (TOML)")
    sp.add_argument("--scale", type=_number(float, 0.0, 1.0, low_open=True), default=1.0,
                    help="shrink the workload: fraction of sets and of document length")
    sp.add_argument("--policies", default="document_set,naive,round_robin,contiguous,random,"
                    "no_reuse", help="what to measure, comma-separated: sharding policies, and "
                    "naive (the peer: every unit of a shard in one generate call, on an engine "
                    "with shared_prefix_attention off)")
    sp.add_argument("--sets", type=_number(int, 0), default=0,
                    help="keep only the workload's first N document sets (0 = all)")
    sp.add_argument("--shards", type=_number(int, 1), default=4, help="shards per policy")
    sp.add_argument("--layouts", default="",
                    help="node layouts to time on the whole workload, replicas x TP, e.g. "
                         "'4x1,2x2,1x4' (run before the policies; --policies '' skips those)")
    sp.add_argument("--run-dir", default=None,
                    help="take question and set lengths from this prepared run (its "
                         "questions.jsonl); jobs/bench-aalcr-real holds the real AA-LCR ones")
    sp.add_argument("--output-tokens", default=None, metavar="N|lognormal:MEDIAN:SIGMA:MAX",
                    help="tokens each answer decodes (ignore_eos): a fixed N, or a log-normal "
                         "length per unit capped at MAX (the budget); several, comma-separated, "
                         "run one after the other on each engine; default: "
                         "sampling.max_new_tokens")
    sp.add_argument("--like", default=None, metavar="JOB",
                    help="take sampling.seeds, n and max_new_tokens from this job file")
    sp.add_argument("--calibrate", action="store_true",
                    help="measure prefill and decode steps on the first engine set, fit the "
                         "[cost] constants of its attention (printed) and predict with them; "
                         "later engine sets reuse its prefill table")
    sp.add_argument("--calibrate-steps", type=_number(int, 1), default=128,
                    help="decode steps per calibration measurement")
    sp.add_argument("--calibration", default=None, metavar="FILE",
                    help="predict with the constants and measurements of an earlier "
                         "--calibrate run on the same machine (its --work-dir's "
                         "calibration.json)")
    sp.add_argument("--predict", action="store_true",
                    help="start no engine: print what the cost model predicts for each "
                         "policy (and the floor) with --calibration FILE's constants, on any "
                         "machine")
    sp.add_argument("--no-floor", action="store_true",
                    help="skip the bandwidth probe and the floor")
    sp.add_argument("--engine-set", action="append", default=[], metavar="KEY=VALUE;...",
                    help="an engine variant to measure (repeatable), e.g. "
                         "\"max_num_batched_tokens=32768\" or \"kv_cache_dtype='fp8'\"; a "
                         "last item policies=A,B runs only those on it")
    sp.add_argument("--attention-check", action="store_true",
                    help="only check shared-prefix attention against stock FlashAttention 3 on "
                         "one layer of random data (errors, kernel times; needs the GPU), then "
                         "exit")
    sp.add_argument("--greedy", type=_number(int, 0), default=0, metavar="N",
                    help="after each engine's runs, decode the first 3 sets greedily for N "
                         "tokens with random weights and compare with the other attention's "
                         "tokens (WORK_DIR/greedy-*.json)")
    sp.add_argument("--work-dir", dest="out", default=None, metavar="DIR",
                    help="work folder (default: lcr-bench-$USER in the temporary folder)")
    sp.add_argument("--out", dest="out", help=argparse.SUPPRESS)  # --work-dir's old name
    sp.add_argument("--json", default=None, help="also write the results to this JSON file")


# ---- handlers -----------------------------------------------------------------------------

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


def _submit(args) -> int:
    from lcr import slurm
    from lcr.config import load_config
    from lcr.plan import plan_run, plan_table
    from lcr.rundir import RunDir

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        rd, plan, questions = plan_run(cfg, force=args.force)
        print(plan_table(plan, questions, cfg))
        for stage, text in slurm.render_scripts(cfg, rd).items():
            print(f"\n===== {stage} (sbatch script; not submitted) =====\n{text}")
        return 0
    kind = slurm.executor_kind(cfg)  # before anything is written
    rd = RunDir(cfg.run_dir)
    with rd.lock():
        rd, plan, questions = plan_run(cfg, force=args.force)
        print(plan_table(plan, questions, cfg))
        slurm.queue(cfg, rd, kind)
    return 0


def _planned(args, rd=None):
    """A planned run's directory and config, with the --set overrides it may take."""
    from lcr.overrides import override_planned
    from lcr.rundir import RunDir

    rd = rd or RunDir(args.run_dir)
    cfg, _ = rd.load_config()
    return rd, override_planned(cfg, args.overrides, str(rd.path))


def _status(args) -> int:
    from lcr.rundir import RunDir
    from lcr.status import status_table

    rd = RunDir(args.run_dir)
    print(status_table(rd, _chain_config(rd, args, args.out), args.out))
    return 0


def _rerun(args) -> int:
    from lcr import slurm
    from lcr.io import atomic_write_text
    from lcr.provenance import config_toml

    rd, cfg = _planned(args)  # refuses a wrong path or --set before anything is locked
    with rd.lock():
        rd, cfg = _planned(args, rd)  # again (read anew only if a plan changed it meanwhile)
        chain_cfg = _chain_config(rd, args, args.out)  # what the chain runs with
        if args.dry_run:
            slurm.queue(chain_cfg, rd, "", args.out, verb="rerun", dry_run=True)
            return 0
        kind = slurm.executor_kind(cfg)
        if args.overrides:  # the jobs read config.toml: keep the new values there
            atomic_write_text(rd.config_file, config_toml(cfg, rd.run_hash()))
        slurm.queue(chain_cfg, rd, kind, args.out, _judge_set(args), verb="rerun")
    return 0


def _generate(args) -> int:
    from lcr.generate import run_shard

    check_scope("generate", args.overrides)
    info = run_shard(args.run_dir, args.shard, args.part, args.parts)
    print(json.dumps({k: v for k, v in info.items() if k != "parts"}), flush=True)
    return 0


def _merge(args) -> int:
    if args.submit:
        return _submit_chain(args, "merge")
    from lcr.merge import merge_run

    check_scope("merge", args.overrides)
    result = merge_run(args.run_dir)
    print(result.summary())
    return 0 if result.complete else 1


def _judge(args) -> int:
    if args.submit:
        return _submit_chain(args, "judge", args.out)
    from lcr import judge

    if args.finalize:
        info = judge.finalize_verdicts(args.run_dir, args.out, args.overrides)
    elif args.shard is not None:
        info = judge.judge_shard(args.run_dir, args.shard, args.out, args.overrides,
                                 retry_errors=args.retry_errors,
                                 retry_truncated=args.retry_truncated)
    else:
        info = judge.judge_run(args.run_dir, args.out, args.overrides,
                               retry_errors=args.retry_errors,
                               retry_truncated=args.retry_truncated)
    print(json.dumps(info), flush=True)
    return 0


def _submit_chain(args, first: str, out: str = "") -> int:
    """`lcr merge --submit`, `lcr judge --submit`: that stage and every one after it (the
    stage table's order) as jobs, whether done or not."""
    from lcr import slurm
    from lcr.rundir import RunDir
    from lcr.stages import chain_from

    rd = RunDir(args.run_dir)
    cfg = _chain_config(rd, args, out)
    todo = {stage.name: stage.shards(rd, cfg) for stage in chain_from(first)}
    kind = slurm.executor_kind(cfg)
    with rd.lock():
        ids = slurm.submit_chain(cfg, rd, todo, kind, out=out, overrides=_judge_set(args))
    slurm.print_ids(rd, kind, ids)
    return 0


def _chain_config(rd, args, out: str = ""):
    """The config a planned run's chain runs with: config.toml, then the judge output folder's
    own settings (judge[-OUT]/settings.json), then --set (refusing what the folder cannot
    take)."""
    from lcr.judge import judge_config

    return judge_config(rd, args.overrides, out)


def _judge_set(args) -> list[str]:
    """The judge's --set overrides, which jobs apply over the judge folder's saved settings."""
    return [o for o in args.overrides if o.startswith("judge.")]


def _report(args) -> int:
    from lcr.report import run_report

    paths: list = []
    print(run_report(args.run_dirs, force=args.force, out=args.out, where=paths,
                     report_set=check_scope("report", args.overrides)))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _compare(args) -> int:
    from lcr.report import run_compare

    print(run_compare(args.run_a, args.run_b, force=args.force, out=args.out,
                      report_set=check_scope("compare", args.overrides)))
    return 0


def _export(args) -> int:
    from lcr.export import export_parquet

    check_scope("export", args.overrides)
    print(f"wrote {export_parquet(args.run_dir, args.out, args.to)}")
    return 0


def _bench(args) -> int:
    from lcr.bench import run_bench

    return run_bench(args)


def _demo(args) -> int:
    from lcr.demo import run_demo

    return run_demo(args.executor, args.overrides, config=args.config)


def _coverage(args) -> int:
    from lcr.coverage import coverage_table
    from lcr.overrides import with_overrides

    cfg = with_overrides(Config(), check_scope("coverage", args.overrides))
    print(coverage_table(args.reps, args.truth, args.icc, args.seeds, args.bootstrap,
                         args.seed, level=cfg.report.ci_level))
    return 0


HANDLERS = {
    "plan": _plan, "submit": _submit, "status": _status, "rerun": _rerun, "generate": _generate,
    "merge": _merge, "judge": _judge, "report": _report, "compare": _compare,
    "export": _export, "bench": _bench, "demo": _demo, "coverage": _coverage,
}


def _message(e: BaseException) -> str:
    if type(e) in (PermissionError, OSError) and e.filename:  # a disk error no module named
        return f"{e.filename}: {e.strerror}; make it writable (or work in another folder)"
    return str(e)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except KeyboardInterrupt:
        print(f"lcr {args.command}: interrupted; what was written is kept. Slurm jobs already "
              "queued keep running: `lcr status RUN` shows them, `scancel` with the ids in "
              "RUN/jobs.json stops them", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # `lcr status RUN | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        code = exit_code(e)
        if code is None:  # a bug: its traceback says where
            raise
        prefix = getattr(e, "prefix", LcrError.prefix)
        print(f"lcr {args.command}: {prefix}{_message(e)}", file=sys.stderr, flush=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
