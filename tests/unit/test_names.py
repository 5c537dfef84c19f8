"""Every subject and key starts with the namespace the process was started with."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from libs.common import names

SPELL = """
import json
from libs.common import names
print(json.dumps([
    names.SUBMIT, names.RUNNER_HEARTBEAT, names.RUNNER_ANNOUNCE, names.STATS,
    names.ALL_CONTROL, names.ALL_LIFECYCLE, names.runner_start("r1"), names.stream_subject("s1", "tokens"),
    names.stream_wildcard("s1"), names.log_key("s1"), names.meta_key("s1"), names.prompt_key("s1"),
    names.conversation_key("t", "c"), names.tenant_active_key("t"), names.FEEDBACK_STREAM,
]))
"""


def spelled_in(namespace: str | None) -> list[str]:
    env = {} if namespace is None else {names.NAMESPACE_VARIABLE: namespace}
    out = subprocess.run(
        [sys.executable, "-c", SPELL], env=env, check=True, capture_output=True, text=True
    )
    return list(json.loads(out.stdout))


@pytest.mark.parametrize("namespace", ["staging", "team-a_2"])
def test_every_subject_and_key_starts_with_the_namespace(namespace: str) -> None:
    spelled = spelled_in(namespace)
    assert all(name.split(".")[0].split(":")[0] == namespace for name in spelled), spelled
    assert spelled == [names.in_namespace(name, namespace) for name in spelled_in(None)]


def test_the_default_namespace_keeps_the_historical_subjects() -> None:
    assert names.SUBMIT == "sluice.submit"
    assert names.stream_subject("s1", "tokens") == "sluice.stream.s1.tokens"


def test_a_streams_keys_share_one_cluster_hash_tag() -> None:
    assert names.log_key("s1") == "sluice:log:{s1}" and names.meta_key("s1") == "sluice:meta:{s1}"
    assert names.prompt_key("s1") == "sluice:prompt:{s1}"


def test_the_stream_id_is_read_back_from_a_namespaced_subject() -> None:
    for namespace in ("sluice", "dev-1a2b3c"):
        subject = names.in_namespace(names.stream_subject("s-42", "control"), namespace)
        assert names.stream_id_of(subject) == "s-42"
