"""Mutation testing of the modules that hold sluice's guarantees, within a time budget.

A test suite that passes proves little until it is seen to fail on a wrong program.
cosmic-ray changes one operator, constant or condition at a time in a module and runs
the tests that cover it; a mutant the tests do not notice (a survivor) is a bug they
would miss. Each module runs in a scratch copy of the tree, so a run cut short by its
budget never leaves a mutant in the sources, and spawned services import the copy.

``make mutate`` runs every target; ``python -m libs.tools.mutate auth reader`` some.
Not part of ``make test``: a full run takes many minutes.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Operators whose mutants are mostly noise here (no bit arithmetic or powers in sluice,
# and `x < y` turned into `x in y` fails with a TypeError any test sees).
EXCLUDED_OPERATORS = [
    r"core/ReplaceBinaryOperator_\w+_(Pow|RShift|LShift|BitOr|BitAnd|BitXor|FloorDiv|Mod)$",
    r"core/ReplaceBinaryOperator_(Pow|RShift|LShift|BitOr|BitAnd|BitXor|FloorDiv|Mod)_\w+$",
    r"core/ReplaceComparisonOperator_(Lt|LtE|Gt|GtE|Eq|NotEq)_(Is|IsNot|In|NotIn)$",
    r"core/VariableInserter",
    r"core/VariableReplacer",
]


@dataclass(frozen=True)
class Target:
    """A module, the tests that cover it, and how long one test run may take.

    ``functions`` narrows the mutants to the functions that hold the guarantee (all
    of the module if empty), so a bounded run spends its time where a survivor matters.
    """

    module: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()
    timeout_s: float = 30.0


TARGETS = {
    "auth": Target("libs/common/auth.py", ("tests/unit/test_auth_and_ids.py",)),
    "reader": Target(
        "services/streamer/reader.py",
        ("tests/unit/test_reader_numbering.py", "tests/unit/test_live_writes.py"),
        functions=(
            "_queued_upto",
            "_write_now",
            "_offer_batch",
            "_step",
            "_catch_up",
            "_token_frame",
        ),
    ),
    "logwriter": Target(
        "services/runner/logwriter.py",
        ("tests/unit/test_logwriter.py",),
        functions=("push", "drain", "_consider", "_take", "_commit"),
    ),
    "admission": Target(
        "services/coordinator/coordinator.py",
        ("tests/unit/test_admit.py",),
        functions=("_admit", "_refuse", "_overloaded", "_backlog"),
    ),
    "sse": Target("libs/common/sse.py", ("tests/unit/test_sse.py",)),
    "nats_parser": Target(
        "libs/common/direct_nats.py",
        ("tests/unit/test_direct_parser.py",),
        functions=("parse", "_headed_message", "_control", "_msg_args"),
    ),
    "hub": Target(
        "services/streamer/hub.py",
        (
            "tests/integration/test_resume.py::test_resume_mid_generation_continues_at_the_next_token",
            "tests/integration/test_walking_skeleton.py",
        ),
        functions=("on_message",),
        timeout_s=120.0,
    ),
    "generation": Target(
        "services/runner/generation.py",
        (
            "tests/integration/test_cancel.py::test_http_cancel_mid_stream_stops_the_model_at_once",
            "tests/integration/test_walking_skeleton.py",
        ),
        functions=("cancel", "_emitted_since", "run", "push", "_terminal"),
        timeout_s=120.0,
    ),
}


@dataclass(frozen=True)
class Mutant:
    operator: str
    line: int
    occurrence: int
    killed: bool


@dataclass(frozen=True)
class Outcome:
    name: str
    target: Target
    total: int
    mutants: list[Mutant]
    source: list[str]

    @property
    def killed(self) -> int:
        return sum(m.killed for m in self.mutants)

    def summary(self) -> str:
        done = len(self.mutants)
        score = f"{100 * self.killed / done:5.1f}%" if done else "    -"
        return (
            f"{self.name:<12} {self.target.module:<38} score {score}"
            f"  killed {self.killed}/{done} run ({self.total} mutants)"
        )


def scratch_copy(into: Path) -> Path:
    """The tree's tracked and untracked (not ignored) files, copied into ``into``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            dest = into / os.fsdecode(name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
    return into


def line_ranges(target: Target) -> list[str]:
    """``first-last`` lines of each of the target's functions, methods included."""
    tree = ast.parse((ROOT / target.module).read_text())
    wanted = set(target.functions)
    found = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in wanted
    ]
    missing = wanted - {node.name for node in found}
    if missing:
        raise SystemExit(f"{target.module} has no function {sorted(missing)}: update TARGETS")
    return [f"{node.lineno}-{node.end_lineno}" for node in found]


def config(target: Target) -> str:
    tests = " ".join(target.tests)
    per_test = int(target.timeout_s)
    command = f"{sys.executable} -m pytest -x -q -p no:cacheprovider --timeout {per_test} {tests}"
    excluded = ", ".join(json.dumps(pattern) for pattern in EXCLUDED_OPERATORS)
    text = (
        "[cosmic-ray]\n"
        f'module-path = "{target.module}"\n'
        f"timeout = {target.timeout_s * 2}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(command)}\n"
        '[cosmic-ray.distributor]\nname = "local"\n'
        f"[cosmic-ray.filters.operators-filter]\nexclude-operators = [{excluded}]\n"
    )
    if target.functions:
        ranges = ", ".join(json.dumps(span) for span in line_ranges(target))
        text += f'[cosmic-ray.filters.line-filter.lines]\n"{target.module}" = [{ranges}]\n'
    return text


def run_budgeted(command: Sequence[str], cwd: Path, budget_s: float) -> None:
    """Run ``command`` in its own process group; stop the whole group at the budget."""
    process = subprocess.Popen(command, cwd=cwd, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        process.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def mutate(name: str, target: Target, budget_s: float, keep: Path | None) -> Outcome:
    with tempfile.TemporaryDirectory(prefix=f"sluice-mutate-{name}-") as tmp:
        tree = scratch_copy(Path(tmp) / "tree")
        source = (tree / target.module).read_text().splitlines()
        (tree / "mutate.toml").write_text(config(target))
        cosmic = str(BIN / "cosmic-ray")
        subprocess.run([cosmic, "init", "mutate.toml", "session.sqlite"], cwd=tree, check=True)
        filters = [str(BIN / "cr-filter-operators"), "session.sqlite", "mutate.toml"]
        subprocess.run(filters, cwd=tree, check=True)
        if target.functions:
            lines = [str(BIN / "cr-filter-lines"), "session.sqlite", "--config", "mutate.toml"]
            subprocess.run(lines, cwd=tree, check=True)
        run_budgeted([cosmic, "exec", "mutate.toml", "session.sqlite"], tree, budget_s)
        dump = subprocess.run(
            [cosmic, "dump", "session.sqlite"], cwd=tree, check=True, capture_output=True
        ).stdout.decode()
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / "session.sqlite", keep / f"{name}.sqlite")
    return outcome(name, target, dump, source)


def outcome(name: str, target: Target, dump: str, source: list[str]) -> Outcome:
    """Read ``cosmic-ray dump``: one JSON ``[work item, result or null]`` a line."""
    mutants: list[Mutant] = []
    total = 0
    for line in dump.splitlines():
        item, result = json.loads(line)
        if result is not None and result["worker_outcome"] == "skipped":
            continue
        total += 1
        if result is None or result["worker_outcome"] != "normal":
            continue
        spec = item["mutations"][0]
        mutants.append(
            Mutant(
                operator=spec["operator_name"],
                line=spec["start_pos"][0],
                occurrence=spec["occurrence"],
                killed=result["test_outcome"] != "survived",
            )
        )
    return Outcome(name, target, total, mutants, source)


def report(result: Outcome) -> str:
    lines = [result.summary()]
    for mutant in sorted((m for m in result.mutants if not m.killed), key=lambda m: m.line):
        code = result.source[mutant.line - 1].strip()
        lines.append(f"    survived  line {mutant.line:>4}  {mutant.operator:<48} {code}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libs.tools.mutate", description=__doc__)
    parser.add_argument("targets", nargs="*", help=f"some of: {', '.join(TARGETS)} (all)")
    parser.add_argument(
        "--budget-s", type=float, default=300.0, help="wall-clock seconds per module (300)"
    )
    parser.add_argument("--keep", type=Path, help="keep each session database in this folder")
    args = parser.parse_args(argv)
    names = args.targets or list(TARGETS)
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    results = []
    for name in names:
        started = time.monotonic()
        result = mutate(name, TARGETS[name], args.budget_s, args.keep)
        results.append(result)
        print(f"{report(result)}\n    ({time.monotonic() - started:.0f} s)", flush=True)
    print("\n" + "\n".join(result.summary() for result in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
