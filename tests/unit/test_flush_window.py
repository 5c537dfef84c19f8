"""The runner's flush window: configured at ease, wider while its loop runs late, back after."""

from __future__ import annotations

from services.runner.window import LAG_HIGH_S, MAX_WINDOW_S, FlushWindow


def test_small_lags_leave_the_configured_window() -> None:
    window = FlushWindow(0.01)
    for _ in range(100):
        window.observe(LAG_HIGH_S / 2)
    assert window.seconds == 0.01


def test_sustained_lag_widens_to_the_cap_and_its_end_narrows_back() -> None:
    window = FlushWindow(0.01)
    widths = []
    for _ in range(30):
        window.observe(0.05)
        widths.append(window.seconds)
    assert widths == sorted(widths) and widths[-1] == MAX_WINDOW_S
    assert widths[2] < MAX_WINDOW_S, "it widens step by step, not at once"
    for _ in range(60):
        window.observe(0.0)
    assert window.seconds == 0.01


def test_one_late_probe_is_smoothed_away() -> None:
    window = FlushWindow(0.01)
    window.observe(LAG_HIGH_S * 2)
    assert window.seconds == 0.01


def test_a_window_of_zero_can_widen_too() -> None:
    window = FlushWindow(0.0)
    for _ in range(5):
        window.observe(0.05)
    assert window.seconds > 0
