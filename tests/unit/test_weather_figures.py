"""What the network benchmark counts from a user's events: losses, repeats, stalls."""

from __future__ import annotations

from libs.tools.bench.weather_clients import Seen

MS = 1_000_000


def token(seq: int, n: int, ts_ms: int) -> dict[str, object]:
    return {"seq": seq, "n": n, "text": "x" * n, "ts": ts_ms * MS}


def test_an_exact_stream_counts_nothing_lost_or_repeated() -> None:
    seen = Seen("sse", "adaptive", sent_ns=0)
    seen.take("token", token(2, 2, 0), 300 * MS)
    seen.take("token", token(5, 3, 40), 340 * MS)
    seen.take("done", {"tokens": 5}, 350 * MS)
    assert (seen.end, seen.lost, seen.duplicated, seen.tokens) == ("done", 0, 0, 5)
    assert seen.first_token_ms() == 300
    assert "".join(seen.texts) == "xxxxx"


def test_repeated_and_skipped_tokens_are_counted() -> None:
    seen = Seen("ws", "token")
    seen.take("token", token(3, 3, 0), 0)
    seen.take("token", token(4, 2, 10), 10 * MS)  # 3 again, then 4
    seen.take("token", token(7, 1, 20), 20 * MS)  # 5 and 6 never came
    seen.take("done", {"tokens": 9}, 30 * MS)  # nor 8 and 9
    assert (seen.duplicated, seen.lost) == (1, 4)


def test_a_stall_is_a_long_gap_the_model_did_not_make() -> None:
    seen = Seen("sse", "adaptive")
    seen.take("token", token(1, 1, 0), 0)
    seen.take("token", token(2, 1, 30), 900 * MS)  # the network held it 870 ms
    seen.take("token", token(3, 1, 1_030), 1_930 * MS)  # the model itself paused 1 s
    assert seen.gaps_ms() == [900, 1030]
    assert seen.stalls() == 1


def test_a_retryable_error_resumes_and_a_final_one_ends() -> None:
    seen = Seen("sse", "adaptive")
    seen.take("error", {"type": "slow_consumer", "retryable": True}, 0)
    resumed = seen.end
    seen.take("error", {"type": "expired", "retryable": False}, 0)
    assert (resumed, seen.end) == ("", "error expired")
