"""The link's weather over time: delay bursts and stalls, drawn from a seeded generator.

One :class:`Weather` serves every connection of a proxy, as one radio serves every
connection of a phone: a stall holds them all at once.
"""

from __future__ import annotations

import random

from libs.tools.netsim.profiles import Episodes, Profile


class Windows:
    """Random windows ``[start, end)`` in seconds since the link came up, drawn as needed."""

    def __init__(self, episodes: Episodes, rng: random.Random) -> None:
        self._episodes = episodes
        self._rng = rng
        self._windows: list[tuple[float, float]] = []
        self._next = rng.expovariate(1 / episodes.every_s)

    def around(self, t: float) -> tuple[float, float] | None:
        """The window holding ``t``, if any."""
        while self._next <= t:
            length = self._rng.uniform(self._episodes.min_s, self._episodes.max_s)
            self._windows.append((self._next, self._next + length))
            self._next += length + self._rng.expovariate(1 / self._episodes.every_s)
        for start, end in reversed(self._windows):
            if start <= t:
                return (start, end) if t < end else None
        return None


class Weather:
    """When a byte sent at ``t`` may leave, given the profile's bursts and stalls."""

    def __init__(self, profile: Profile, seed: int = 0) -> None:
        self.profile = profile
        self._rng = random.Random(seed)
        self._bursts = None if profile.bursts is None else Windows(profile.bursts, self._rng)
        self._stalls = None if profile.stalls is None else Windows(profile.stalls, self._rng)

    def delay_s(self, t: float) -> float:
        """One way delay for a piece sent at ``t``: base, jitter and any burst."""
        profile = self.profile
        delay = profile.delay_ms + self._rng.uniform(0.0, profile.jitter_ms)
        burst = None if self._bursts is None else self._bursts.around(t)
        if burst is not None and profile.bursts is not None:
            delay += profile.bursts.extra_ms
        return delay / 1000

    def after_stalls(self, t: float) -> float:
        """``t``, or the end of the stall it falls in."""
        stall = None if self._stalls is None else self._stalls.around(t)
        return t if stall is None else stall[1]
