"""A short fuzz pass against real processes (``sluice fuzz --requests N`` runs longer ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.tools.fuzz import FUZZ_KEY, SUITE_ENV, fuzz_suite, suite_problems
from libs.tools.stack import Service, Stack
from tests.conftest import FAST_ENV, own_servers

REQUESTS = 2_000


@pytest.mark.parametrize("keyed", [True, False], ids=["api-keys", "anonymous"])
def test_random_and_mutated_requests_get_contract_answers_and_leave_the_suite_clean(
    tmp_path: Path, keyed: bool
) -> None:
    env = {**FAST_ENV, **SUITE_ENV} if keyed else dict(FAST_ENV)
    with own_servers(tmp_path) as (nats, redis):
        stack = Stack(nats.url, f"{redis.url}/0", tmp_path, env=env)
        try:
            report = fuzz_suite(
                stack.start(), REQUESTS, seed=7, api_key=FUZZ_KEY if keyed else None
            )
        finally:
            stack.stop()
    assert report.sent >= REQUESTS
    assert report.problems == [], "\n".join(report.problems[:20])
    assert len(report.answers) > 20, "the fuzz reached every endpoint with varied answers"


def test_the_fuzzer_notices_a_traceback_in_a_log(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    log.write_text('{"level":"error","exc":"Traceback (most recent call last): ..."}\n')
    service = Service("gateway", 1, {}, log)
    problems = suite_problems(Stack("", "", tmp_path, services=[service]))
    assert any("not running" in p for p in problems)
    assert any("logged" in p for p in problems)
