"""``make mutate``: its targets name real functions, its config is valid, its scores count right."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest

from libs.tools.mutate import ROOT, TARGETS, Target, config, line_ranges, outcome


def test_every_target_names_a_module_tests_and_functions_that_exist() -> None:
    for target in TARGETS.values():
        for test in target.tests:
            assert (ROOT / test.split("::")[0]).is_file(), test
        if target.functions:
            assert len(line_ranges(target)) >= len(target.functions)


def test_a_target_naming_a_missing_function_stops_the_run() -> None:
    with pytest.raises(SystemExit, match="no_such_function"):
        line_ranges(Target("libs/common/auth.py", (), functions=("no_such_function",)))


def test_the_config_narrows_mutants_to_the_targets_functions() -> None:
    parsed = tomllib.loads(config(TARGETS["reader"]))["cosmic-ray"]
    assert parsed["module-path"] == "services/streamer/reader.py"
    assert "tests/unit/test_reader_numbering.py" in parsed["test-command"]
    spans = parsed["filters"]["line-filter"]["lines"]["services/streamer/reader.py"]
    source = (ROOT / "services/streamer/reader.py").read_text().splitlines()
    catch_up = next(i for i, line in enumerate(source, 1) if "def _catch_up" in line)
    assert any(int(s.split("-")[0]) == catch_up for s in spans)
    assert parsed["filters"]["operators-filter"]["exclude-operators"]


def dump_line(line: int, result: dict[str, Any] | None) -> str:
    spec = {"operator_name": "core/AddNot", "occurrence": 0, "start_pos": [line, 4]}
    return json.dumps([{"mutations": [spec]}, result])


def test_scores_count_killed_and_survived_mutants_not_skipped_or_pending() -> None:
    dump = "\n".join(
        [
            dump_line(1, {"worker_outcome": "normal", "test_outcome": "killed"}),
            dump_line(2, {"worker_outcome": "normal", "test_outcome": "survived"}),
            dump_line(3, {"worker_outcome": "skipped", "test_outcome": None}),
            dump_line(4, None),
        ]
    )
    result = outcome("x", TARGETS["auth"], dump, ["a", "b", "c", "d"])
    assert (result.total, len(result.mutants), result.killed) == (3, 2, 1)
    assert "killed 1/2 run (3 mutants)" in result.summary()
