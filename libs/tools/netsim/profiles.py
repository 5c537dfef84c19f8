"""Network weather profiles: what each direction of a link does to the bytes that cross it.

The figures are sourced in ``docs/perceived-latency.md``: WebPageTest's and Chrome
DevTools' throttling presets for the RTT and bandwidth of ``3g`` and ``4g``, published
mobile and Wi-Fi measurements for jitter, handover bursts and stalls. Delays are one
way: a profile's RTT is twice its ``delay_ms`` (plus jitter).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

CutMode = Literal["fin", "rst", "both"]


@dataclass(frozen=True, slots=True)
class Episodes:
    """Windows that come now and then: exponential gaps of ``every_s`` on average."""

    every_s: float
    min_s: float
    max_s: float
    extra_ms: float = 0.0  # added delay inside a burst; 0 means the window is a stall


@dataclass(frozen=True, slots=True)
class Cuts:
    """The connection is cut for ``outage_s`` every ``period_s``, the first at ``first_s``."""

    period_s: float
    outage_s: float
    first_s: float
    mode: CutMode = "both"


@dataclass(frozen=True, slots=True)
class Profile:
    """One kind of network, the same both ways except for bandwidth."""

    name: str
    delay_ms: float
    jitter_ms: float = 0.0
    down_kbps: float = 0.0  # 0: no cap
    up_kbps: float = 0.0
    bursts: Episodes | None = None
    stalls: Episodes | None = None
    cuts: Cuts | None = None
    about: str = ""

    def with_(self, **changes: object) -> Profile:
        """A variant, for tests and benchmarks that compress a profile's clock."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def rtt_ms(self) -> float:
        """Mean round trip added by the profile (jitter is uniform in [0, jitter_ms])."""
        return 2 * (self.delay_ms + self.jitter_ms / 2)


WEAK_SIGNAL = Profile("weak", delay_ms=40, jitter_ms=20, down_kbps=5_000, up_kbps=2_000)
"""A mobile link at the edge of coverage, which ``flaky`` and ``tunnel`` trouble further."""

PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile("lan", delay_ms=0.5, about="a wired LAN: under a millisecond, no cap"),
        Profile(
            "wifi",
            delay_ms=5,
            jitter_ms=30,
            down_kbps=20_000,
            up_kbps=10_000,
            about="busy hotel Wi-Fi: 10-70 ms RTT, jitter up to 30 ms each way",
        ),
        Profile(
            "4g",
            delay_ms=25,
            jitter_ms=50,
            down_kbps=9_000,
            up_kbps=9_000,
            bursts=Episodes(every_s=15, min_s=0.3, max_s=1.0, extra_ms=300),
            about="4G on the move: 50-150 ms RTT, 9 Mbit/s, a 300 ms handover burst every ~15 s",
        ),
        Profile(
            "3g",
            delay_ms=150,
            down_kbps=750,
            up_kbps=750,
            about="3G: 300 ms RTT, 750 kbit/s each way",
        ),
        WEAK_SIGNAL.with_(
            name="flaky",
            stalls=Episodes(every_s=10, min_s=1, max_s=5),
            about="a weak signal: 80-120 ms RTT, and 1-5 s stalls every ~10 s",
        ),
        WEAK_SIGNAL.with_(
            name="tunnel",
            cuts=Cuts(period_s=30, outage_s=5, first_s=10),
            about="a train through tunnels: connections cut (FIN, then RST) 5 s every 30 s",
        ),
    )
}
