"""Large prompts travel by reference: parked in Redis once, fetched by the runner.

NATS refuses a message past its ``max_payload`` (1 MiB by default), and a request
body may be as large as ``SLUICE_MAX_BODY_BYTES``. Past :data:`INLINE_PROMPT_BYTES` the
entrance writes the prompt or messages to Redis and the :class:`Submit` (which every
hop carries: coordinator, runner start) carries only the stream id that names them.
"""

from __future__ import annotations

from typing import cast

import msgspec

from libs.common import names
from libs.common.connections import RedisClient
from libs.common.errors import Expired
from libs.common.wire import PromptBody, Submit, prompt_codec

INLINE_PROMPT_BYTES = 256 * 1024


async def park_if_large(redis: RedisClient, message: Submit, ttl_s: int) -> Submit:
    """``message`` as it goes on the wire: as it is, or with its prompt parked in Redis."""
    body = prompt_codec.encode(PromptBody(prompt=message.prompt, messages=message.messages))
    if len(body) <= INLINE_PROMPT_BYTES:
        return message
    await redis.set(names.prompt_key(message.id), body, ex=ttl_s)
    return msgspec.structs.replace(message, prompt=None, messages=None, parked=True)


async def fetch_parked(redis: RedisClient, message: Submit) -> Submit:
    """The whole request back, for the runner, which alone needs it (so it takes it, and
    Redis does not hold a large prompt for longer than the stream waits); a prompt gone
    from Redis fails the stream."""
    if not message.parked:
        return message
    raw = await redis.getdel(names.prompt_key(message.id))
    if raw is None:
        raise Expired("the request's prompt is no longer stored; submit it again")
    body = prompt_codec.decode(cast(bytes, raw))
    return msgspec.structs.replace(
        message, prompt=body.prompt, messages=body.messages, parked=False
    )
