"""``sluice ask "prompt"``: the answer as plain text on stdout, for scripts.

The text is written as it streams, then a newline. Exit status 0 when the answer
ended normally (or at max tokens), 1 when the stream failed or was stopped, 2 for a
usage error. A dropped connection is resumed without repeating text. With no prompt
(or ``-``), the prompt is read from stdin.
"""

from __future__ import annotations

import asyncio
import sys

from libs.client import Client, StreamFailed
from libs.tools import helptext
from libs.tools.chat import add_request_arguments, request_fields


async def _ask(gateway: str, api_key: str | None, prompt: str, fields: dict[str, object]) -> int:
    async with Client(gateway, api_key) as client:
        try:
            stream = await client.create(prompt, **fields)
            async for token in stream.tokens():
                sys.stdout.write(token.text)
                sys.stdout.flush()
        except StreamFailed as failed:
            sys.stdout.write("\n")
            print(f"sluice ask: {failed.type}: {failed.message}", file=sys.stderr)
            return 1
    sys.stdout.write("\n")
    done = stream.done
    if done is None or done.finish_reason not in ("stop", "length"):
        reason = "no end" if done is None else done.finish_reason
        print(f"sluice ask: the answer ended early ({reason})", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> None:
    parser = helptext.parser("sluice ask", __doc__, paragraphs=2)
    parser.add_argument("prompt", nargs="?", default="-", help="the question ('-': read stdin)")
    add_request_arguments(parser)
    args = parser.parse_args(argv)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        parser.error("the prompt is empty")
    gateway, api_key, fields = request_fields(args, parser)
    raise SystemExit(asyncio.run(_ask(gateway, api_key, prompt, fields)))
