from __future__ import annotations

import pytest

from libs.common.api import SimParams, decode_request
from libs.common.errors import InvalidRequest
from libs.common.wire import Done, Failed, TokenBatch, tokens_codec
from services.runner.backends.sim import sim_tokens


def test_token_batch_is_the_same_bytes_live_and_in_the_log() -> None:
    batch = TokenBatch(first=3, texts=["a", "b", "c"], ts=42)
    assert batch.last == 5
    assert tokens_codec.decode(tokens_codec.encode(batch)) == batch
    for terminal in (Done(finish_reason="stop", tokens=5), Failed(type="x", message="y")):
        assert tokens_codec.decode(tokens_codec.encode(terminal)) == terminal


def test_request_defaults_and_resolution() -> None:
    request = decode_request(b'{"prompt": "hi", "conversation_id": "c"}')
    assert request.model == "sim" and request.max_tokens == 256
    assert request.resolved_supersede() is True
    assert request.resolved_abandon_after_s(30) == 30
    never = decode_request(b'{"prompt": "hi", "abandon_after_s": null, "supersede": false}')
    assert never.resolved_abandon_after_s(30) is None
    assert never.resolved_supersede() is False


def test_messages_become_the_prompt_text() -> None:
    request = decode_request(
        b'{"messages": [{"role": "system", "content": "be brief"},'
        b' {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}'
    )
    assert request.prompt_text == "system: be brief\nuser: hi"


@pytest.mark.parametrize(
    "body",
    [b"", b"null", b'{"prompt": ""', b'{"messages": []}', b'{"prompt": "x", "debounce_ms": -1}'],
)
def test_invalid_bodies_raise_invalid_request(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode_request(body)


def test_sim_text_is_a_function_of_prompt_and_seed() -> None:
    def take(prompt: str, seed: int) -> list[str]:
        tokens = sim_tokens(prompt, seed)
        return [next(tokens) for _ in range(50)]

    assert take("a", 1) == take("a", 1)
    assert take("a", 1) != take("a", 2)
    assert take("a", 1) != take("b", 1)
    assert SimParams().tokens == 100
