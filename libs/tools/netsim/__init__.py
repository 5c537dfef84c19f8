"""``sluice netsim``: network weather between clients and sluice, made in user space.

Kernel ``netem`` is missing from most containers, so the weather is an asyncio TCP proxy: per direction an added delay with order kept, a bandwidth cap,
stalls and scheduled cuts by FIN or RST. ``--route LISTEN=HOST:PORT`` (repeatable)
puts the gateway and the streamer behind the same weather, as one phone's radio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from dataclasses import replace

from libs.tools.netsim.profiles import PROFILES, Cuts, Episodes, Profile
from libs.tools.netsim.proxy import NetSim, Route, cut_socket

__all__ = ["PROFILES", "Cuts", "Episodes", "NetSim", "Profile", "Route", "cut_socket", "main"]


def parse_route(text: str) -> Route:
    """``LISTEN=HOST:PORT``, LISTEN 0 for any free port."""
    listen, sep, target = text.partition("=")
    host, colon, port = target.rpartition(":")
    if not (sep and colon and listen.isdigit() and port.isdigit()):
        raise argparse.ArgumentTypeError(f"expected LISTEN=HOST:PORT, got {text!r}")
    return Route(host, int(port), int(listen))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice netsim",
        description="Network weather between clients and sluice: a TCP proxy that adds delay"
        " (order kept), caps bandwidth, stalls and cuts connections (FIN or RST), per direction."
        " Each --route LISTEN=HOST:PORT (repeatable) puts one service behind the same weather,"
        " as one phone's radio would.",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="lan")
    parser.add_argument("--route", type=parse_route, action="append", required=True)
    parser.add_argument("--seed", type=int, default=0, help="seed of jitter, bursts and stalls")
    parser.add_argument("--cut", choices=("fin", "rst", "both"), help="how tunnel cuts end")
    parser.add_argument("--list", action="store_true", help="print the profiles and exit")
    return parser


def describe() -> str:
    return "\n".join(f"{name:7} {profile.about}" for name, profile in PROFILES.items())


async def serve(sim: NetSim) -> None:
    await sim.start()
    for route, port in zip(sim.routes, sim.ports, strict=True):
        print(
            f"netsim {sim.profile.name}: 127.0.0.1:{port} -> {route.host}:{route.port}", flush=True
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.stop()


def main(argv: list[str]) -> None:
    if "--list" in argv:
        print(describe())
        return
    args = _parser().parse_args(argv)
    profile = PROFILES[args.profile]
    if args.cut and profile.cuts is not None:
        profile = profile.with_(cuts=replace(profile.cuts, mode=args.cut))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(NetSim(profile, args.route, args.seed)))
