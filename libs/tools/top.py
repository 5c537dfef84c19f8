"""``sluice top``: the suite's live figures in the terminal, refreshed every second.

It reads the gateway's ``/dashboard/stats`` (the same feed as ``/dashboard``) and
draws it with plain ANSI escapes, so it needs no curses and works over any SSH.
"""

from __future__ import annotations

import sys
import time
import urllib.request

from libs.common.settings import load_settings
from libs.common.stats import Dashboard, Percentiles, dashboard_decoder
from libs.tools import helptext

CLEAR = "\x1b[H\x1b[2J"
BOLD, DIM, RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
LATENCY = (
    ("ttft_ms", "time to first token (model)"),
    ("first_frame_ms", "first frame (streamer)"),
    ("delivery_ms", "token delivery lag"),
    ("queue_wait_ms", "queue wait"),
    ("cancel_to_stop_ms", "cancel to stop"),
    ("continuation_stall_ms", "stall at a move"),
)
BREAKDOWNS = (
    ("sluice_streams_finished", "ended"),
    ("sluice_http_errors", "errors"),
    ("sluice_coordinator_rejections", "rejected"),
    ("sluice_streamer_disconnects", "disconnects"),
    ("sluice_streamer_resumes", "resumes"),
    ("sluice_tokens_wasted", "wasted tokens"),
    ("sluice_runner_lost", "runners lost"),
    ("sluice_continuations", "answers moved"),
    ("sluice_tokens_recomputed", "tokens recomputed"),
)


def fetch(gateway: str, timeout_s: float = 2.0) -> Dashboard:
    with urllib.request.urlopen(f"{gateway.rstrip('/')}/dashboard/stats", timeout=timeout_s) as r:
        return dashboard_decoder.decode(r.read())


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _latency(name: str, p: Percentiles) -> str:
    cells = "".join(f"{_num(v, 1):>10}" for v in (p.p50, p.p95, p.p99))
    return f"  {name:<30}{cells}{_num(p.count):>10}"


def _breakdown(values: dict[str, float]) -> str:
    parts = [f"{key or 'all'} {_num(value)}" for key, value in sorted(values.items()) if value]
    return ", ".join(parts) or "none"


def render(d: Dashboard, color: bool = True) -> str:
    """The screen for ``d``, as lines of text with ANSI emphasis when ``color``."""
    bold, dim, reset = (BOLD, DIM, RESET) if color else ("", "", "")
    waste = "" if d.waste_ratio is None else f" ({100 * d.waste_ratio:.1f}% of generated)"
    lines = [
        f"{bold}sluice top{reset}  namespace {bold}{d.namespace}{reset}"
        f"  {dim}{time.strftime('%H:%M:%S')}  "
        + "  ".join(f"{name} x{count}" for name, count in sorted(d.instances.items()))
        + reset,
        "",
        f"  streams running {bold}{_num(d.streams_running)}{reset} / {_num(d.slots_total)} slots"
        f"   queued {bold}{_num(d.streams_queued)}{reset}"
        f"   runners alive {bold}{_num(d.runners_alive)}{reset}",
        f"  tokens/s {bold}{_num(d.tokens_per_s, 1)}{reset}"
        f"   streams ended/s {bold}{_num(d.finished_per_s, 2)}{reset}"
        f"   open connections {bold}{_num(d.open_connections)}{reset}",
        "",
        f"{dim}  {'latency, ms, last ' + _num(d.window_s) + ' s':<30}"
        f"{'p50':>10}{'p95':>10}{'p99':>10}{'n':>10}{reset}",
        *(_latency(name, getattr(d, key)) for key, name in LATENCY),
        "",
        *(
            f"  {label:<16}{_breakdown(d.totals.get(family, {}))}"
            + (waste if family == "sluice_tokens_wasted" else "")
            for family, label in BREAKDOWNS
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = helptext.parser("sluice top", __doc__)
    parser.add_argument("--gateway", help="the gateway's URL (default: SLUICE_PUBLIC_GATEWAY_URL)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    parser.add_argument("--once", action="store_true", help="print one screen and exit")
    args = parser.parse_args(argv)
    gateway = args.gateway or load_settings().public_url("gateway")
    color = sys.stdout.isatty()
    try:
        while True:
            try:
                screen = render(fetch(gateway), color)
            except OSError as exc:
                screen = f"sluice top: no answer from {gateway}: {exc}\n"
                if args.once:
                    raise SystemExit(screen.strip()) from None
            sys.stdout.write(screen if args.once else CLEAR + screen)
            sys.stdout.flush()
            if args.once:
                return
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
