"""Every `lcr` command line the documentation shows parses with the real parser of lcr.cli.

    python -m pytest -q tests/test_docs.py

The walk reads the code blocks and the inline code of README.md, tests/FAILURES.md,
jobs/PERFORMANCE.md, jobs/README.md, jobs/JUDGE.md and jobs/STATISTICS.md. A synopsis
(`lcr judge RUN_DIR [--shard K | --finalize]`)
is tried in each of its forms; a mention without its positional arguments (`lcr rerun
--dry-run`) gets placeholders for them; a quoted message (`lcr plan: error: ...`) is not a
command. Every `--set` must name a real key. Nothing runs: the tests that run the commands are
elsewhere (each documented command and flag is run by one of them).
"""

import contextlib
import io
import itertools
import re
import shlex

import pytest
from helpers import REPO

from lcr.cli import _parser
from lcr.config import parse_override, valid_keys

DOCS = ("README.md", "tests/FAILURES.md", "jobs/PERFORMANCE.md", "jobs/README.md",
        "jobs/STATISTICS.md", "jobs/JUDGE.md")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)  # `x` and ``x `y` ``
# An optional part of a synopsis: [--flag ...] or [PLACEHOLDER...], not a TOML list ([0,1]).
GROUP = re.compile(r"(?:(?<=\s)|^)\[([-A-Z][^\[\]]*)\]")
PLACEHOLDERS = {"K": "0", "N": "1024"}  # where the parser wants a number
PARSER = _parser()


def doc_commands() -> list[tuple[str, str]]:
    """(file, command) for every `lcr ...` line of the documentation pages."""
    found = []
    for name in DOCS:
        text = (REPO / name).read_text(encoding="utf-8")
        for block in FENCE.findall(text):
            for line in block.splitlines():
                for part in re.split(r"&&|;", line.split(" #", 1)[0]):  # `a && lcr demo`
                    found.append((name, part.strip()))
        for _, span in SPAN.findall(FENCE.sub("", text)):
            found.append((name, " ".join(span.replace("\\|", "|").split())))
    return [(name, c) for name, c in found
            if c.startswith("lcr ") and not c.split()[1].endswith(":")]  # "lcr plan: error"


def forms(synopsis: str) -> list[str]:
    """Each way of writing a synopsis: every optional group left out or given in one of its
    alternatives (`[--shard K | --finalize]`)."""
    groups = GROUP.findall(synopsis)
    if not groups:
        return [synopsis]
    skeleton = GROUP.sub("\0", synopsis)
    out = []
    for choice in itertools.product(*[["", *g.split(" | ")] for g in groups]):
        parts = skeleton.split("\0")
        out.append(" ".join("".join(p + c for p, c in zip(parts, [*choice, ""])).split()))
    return out


def parse_error(command: str) -> str | None:
    """Why the parser refuses `command` (without running it), or None."""
    words = [PLACEHOLDERS.get(w, w.removesuffix("...")) for w in shlex.split(command)[1:]]
    for attempt in range(2):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                args = PARSER.parse_args(words)
        except SystemExit as e:
            if e.code == 0:
                return None  # --help
            message = err.getvalue().strip().splitlines()[-1]
            missing = re.search(r"the following arguments are required: (.+)", message)
            names = [n for n in missing.group(1).split(", ") if not n.startswith("-")] if (
                missing) else []
            if attempt or not names:
                return message
            words += ["X"] * len(names)  # a mention of the command: `lcr rerun --dry-run`
            continue
        keys = set(valid_keys())
        for text in getattr(args, "overrides", []):
            (section, values), = parse_override(text).items()
            if f"{section}.{next(iter(values))}" not in keys:
                return f"--set {text}: no such key"
        return None
    return None


COMMANDS = doc_commands()


@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{w}:{c}" for w, c in COMMANDS])
def test_documented_command_parses(where, command):
    for form in forms(command):
        assert parse_error(form) is None, f"{where}: `{form}`: {parse_error(form)}"


def test_the_walk_sees_every_command_and_catches_a_wrong_one():
    readme = {c.split()[1] for w, c in COMMANDS if w == "README.md"}
    commands = PARSER._subparsers._group_actions[0].choices
    assert readme == set(commands)  # the README shows every subcommand, and only those
    assert len(COMMANDS) >= 60
    assert forms("lcr judge RUN [--shard K | --finalize] [--out NAME]") == [
        "lcr judge RUN", "lcr judge RUN --out NAME", "lcr judge RUN --shard K",
        "lcr judge RUN --shard K --out NAME", "lcr judge RUN --finalize",
        "lcr judge RUN --finalize --out NAME"]
    assert forms('lcr plan C --set "sampling.seeds=[0,1]"') == [
        'lcr plan C --set "sampling.seeds=[0,1]"']
    assert parse_error("lcr rerun --dry-run") is None  # a mention
    assert "unrecognized arguments: --outt" in parse_error("lcr judge RUN --outt x")
    assert "invalid choice" in parse_error("lcr rejudge RUN")
    assert "no such key" in parse_error("lcr rerun RUN --set slurm.partitoin=gpu")
    assert "not allowed with argument" in parse_error("lcr judge RUN --shard 0 --finalize")
