"""The nats-py internals DirectNATS relies on are still there, spelled as it uses them.

When a nats-py upgrade renames or drops one, this fails naming each, before any
end-to-end test hangs on a parser that no longer sees messages. The list and the
upgrade procedure are in the decision record on running beyond one machine.
"""

from __future__ import annotations

import inspect
import re

from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.protocol import parser

CLIENT_METHODS = {
    "_send_command": ["cmd", "priority"],
    "_flush_pending": [],
    "_remove_sub": ["sid", "max_msgs"],
    "_process_msg": ["sid", "subject", "reply", "data", "headers"],
    "_process_ping": [],
    "_process_pong": [],
    "_process_err": ["err_msg"],
    "_process_info": ["info", "initial_connection"],
}
CLIENT_STATE = ("_ps", "_max_pending_size", "_pending_data_size", "_max_payload", "_flush_queue")
SUBSCRIPTION_STATE = ("_id", "_pending_queue")
PARSER_NAMES = ("Parser", "ERR_RE", "HMSG_RE", "INFO_RE", "OK_RE", "PING_RE", "PONG_RE")


def missing_internals() -> list[str]:
    missing = []
    for name, parameters in CLIENT_METHODS.items():
        method = getattr(Client, name, None)
        if method is None:
            missing.append(f"Client.{name}")
            continue
        found = [p for p in inspect.signature(method).parameters if p != "self"]
        if found[: len(parameters)] != parameters:
            missing.append(f"Client.{name}({', '.join(parameters)}) is now ({', '.join(found)})")
    client = Client()
    missing += [f"Client().{name}" for name in CLIENT_STATE if not hasattr(client, name)]
    source = inspect.getsource(Subscription.__init__)
    missing += [
        f"Subscription.{name}"
        for name in SUBSCRIPTION_STATE
        if not re.search(rf"self\.{name}\b\s*[:=]", source)
    ]
    missing += [f"nats.protocol.parser.{n}" for n in PARSER_NAMES if not hasattr(parser, n)]
    if not hasattr(parser.Parser(client), "buf"):
        missing.append("Parser().buf")
    return missing


def test_the_nats_py_internals_direct_nats_uses_are_all_there() -> None:
    missing = missing_internals()
    assert not missing, (
        "nats-py changed private names that libs/common/direct_nats.py relies on: "
        + "; ".join(missing)
        + ". Adapt DirectNATS and DirectParser to the new names (or pin the old nats-py), "
        "as the decision record on running beyond one machine describes."
    )
