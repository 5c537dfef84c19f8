"""The runner's flush window, widened while its event loop runs late.

Below saturation each token of a 50 tokens/s stream is its own log entry and its own
NATS message, and every process downstream pays per message. A runner whose loop runs
late (its own CPU, or the machine's, is used up) widens its streams' flush window, so
each entry carries several tokens and the whole pipeline does less work per token; once
the lag is gone the window shrinks back to ``SLUICE_RUNNER_FLUSH_MS``. The lag is
measured by a probe that sleeps a few milliseconds and times how late it wakes.
"""

from __future__ import annotations

import asyncio

from libs.common import metrics

PROBE_EVERY_S = 0.1
PROBE_S = 0.01
LAG_HIGH_S = 0.005  # a smoothed lag above this widens the window
LAG_LOW_S = 0.002  # below this it narrows
MIN_WIDENED_S = 0.01  # the first step up from a window of 0 (SLUICE_RUNNER_FLUSH_MS=0)
MAX_WINDOW_S = 0.05
GROW = 1.5
SHRINK = 0.8
SMOOTHING = 0.2


class FlushWindow:
    def __init__(self, base_s: float) -> None:
        self.base_s = base_s
        self.seconds = base_s
        self.lag_s = 0.0
        metrics.runner_flush_window.value = base_s

    def observe(self, lag_s: float) -> None:
        """Fold one probe's lateness in, and move the window accordingly."""
        self.lag_s += SMOOTHING * (lag_s - self.lag_s)
        if self.lag_s > LAG_HIGH_S:
            self.seconds = min(MAX_WINDOW_S, max(self.seconds * GROW, MIN_WIDENED_S))
        elif self.lag_s < LAG_LOW_S:
            self.seconds = max(self.base_s, self.seconds * SHRINK)
        metrics.runner_flush_window.value = self.seconds

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PROBE_EVERY_S - PROBE_S)
            started = loop.time()
            await asyncio.sleep(PROBE_S)
            self.observe(loop.time() - started - PROBE_S)
