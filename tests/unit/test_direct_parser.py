"""The fast MSG path of the NATS parser: same messages, same order, however reads split."""

from __future__ import annotations

import pytest
from nats import errors

from libs.common.direct_nats import DirectNATS

Event = tuple[str, ...]


class Recording(DirectNATS):
    """A client that is never connected: it records what the parser hands it."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []
        self.reset_on: bytes | None = None
        self._direct[1] = lambda subject, data: self.events.append(
            ("direct", subject, data.decode())
        )

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        if sid in self._direct:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.events.append(("queued", subject.decode(), reply.decode(), data.decode()))
        if data == self.reset_on:
            self._ps.reset()

    async def _process_ping(self) -> None:
        self.events.append(("ping",))

    async def _process_pong(self) -> None:
        self.events.append(("pong",))

    async def _process_err(self, err_msg: str) -> None:
        self.events.append(("err", err_msg))

    async def _process_info(
        self, info: dict[str, object], initial_connection: bool = False
    ) -> None:
        self.events.append(("info", str(info["server_id"])))


HEADERS = b"NATS/1.0\r\nA: b\r\n\r\n"


def msg(subject: bytes, sid: int, payload: bytes, reply: bytes = b"") -> bytes:
    args = b" ".join(part for part in (subject, b"%d" % sid, reply, b"%d" % len(payload)) if part)
    return b"MSG %s\r\n%s\r\n" % (args, payload)


WIRE = b"".join(
    [
        msg(b"a.tokens", 1, b"hello"),
        msg(b"a.tokens", 1, b"abc", reply=b"_INBOX.x"),
        msg(b"b.other", 2, b"MSG x 1 2\r\n"),  # a payload that looks like an op
        b"+OK\r\n",
        msg(b"a.tokens", 1, b""),
        b"PING\r\n",
        msg(b"a.tokens", 1, b"next"),
        b"HMSG a.tokens 1 %d %d\r\n%sbody\r\n" % (len(HEADERS), len(HEADERS) + 4, HEADERS),
        b'INFO {"server_id":"s1"}\r\n',
        msg(b"b.other", 2, b"hi", reply=b"r"),
        b"PONG\r\n",
        b"-ERR 'Permissions Violation'\r\n",
        msg(b"a.tokens", 1, b"x" * 70_000),
        msg(b"a.tokens", 1, b"end"),
    ]
)
EXPECTED: list[Event] = [
    ("direct", "a.tokens", "hello"),
    ("direct", "a.tokens", "abc"),
    ("queued", "b.other", "", "MSG x 1 2\r\n"),
    ("direct", "a.tokens", ""),
    ("ping",),
    ("direct", "a.tokens", "next"),
    ("direct", "a.tokens", "body"),
    ("info", "s1"),
    ("queued", "b.other", "r", "hi"),
    ("pong",),
    ("err", "'permissions violation'"),
    ("direct", "a.tokens", "x" * 70_000),
    ("direct", "a.tokens", "end"),
]


async def feed(chunks: list[bytes]) -> list[Event]:
    client = Recording()
    for chunk in chunks:
        await client._ps.parse(chunk)
    assert not client._ps.buf
    return client.events


async def test_one_read_holding_every_kind_of_op() -> None:
    assert await feed([WIRE]) == EXPECTED


async def test_every_split_into_two_reads() -> None:
    small = WIRE.index(b"x" * 100) + 20  # every op before the big payload, and into it
    cuts = [*range(0, small), *range(len(WIRE) - 40, len(WIRE) + 1)]
    for cut in cuts:
        assert await feed([WIRE[:cut], WIRE[cut:]]) == EXPECTED, cut


async def test_lines_longer_than_the_default_control_line_are_read() -> None:
    """A server may raise ``max_control_line``, and a cluster's INFO can be long."""
    subject = b"a." + b"s" * 5_000
    info = b'INFO {"server_id":"s1","connect_urls":["%s"]}\r\n' % (b"h:4222" * 1_000)
    wire = msg(subject, 1, b"long") + info
    assert await feed([wire[:3_000], wire[3_000:]]) == [
        ("direct", subject.decode(), "long"),
        ("info", "s1"),
    ]


async def test_reads_of_seven_bytes() -> None:
    small = WIRE.index(b"x" * 100)
    head = WIRE[:small]
    events = await feed([head[i : i + 7] for i in range(0, len(head), 7)] + [WIRE[small:]])
    assert events == EXPECTED


async def test_malformed_and_unknown_ops_are_protocol_errors() -> None:
    for wire in (
        b"MSG a.tokens one 5\r\nhello\r\n",
        b"HMSG a.tokens 1 x\r\n",
        b"BOGUS\r\n",
    ):
        with pytest.raises(errors.ProtocolError):
            await feed([wire])


async def test_a_reset_while_a_queued_message_is_handled_drops_the_old_buffer() -> None:
    client = Recording()
    client.reset_on = b"hi"
    await client._ps.parse(b"MSG b 2 2\r\nhi\r\nMSG a 1 5\r\nstale\r\n")
    assert client.events == [("queued", "b", "", "hi")]
    await client._ps.parse(b"MSG a 1 5\r\nfresh\r\n")
    assert client.events[-1] == ("direct", "a", "fresh")


async def test_each_message_that_ends_a_read_is_delivered_with_that_read() -> None:
    headed = b"HMSG a.tokens 2 %d %d\r\n%sbody\r\n" % (len(HEADERS), len(HEADERS) + 4, HEADERS)
    for wire, event in (
        (headed, ("queued", "a.tokens", "", "body")),
        (msg(b"a.tokens", 1, b"x"), ("direct", "a.tokens", "x")),
        (msg(b"a.tokens", 2, b"y"), ("queued", "a.tokens", "", "y")),
    ):
        assert await feed([wire]) == [event], wire
