"""``sluice``: one console script for the four services and the developer tools."""

from __future__ import annotations

import argparse
import importlib
import sys

from libs.common.settings import SettingsError, load_settings

SERVICES = {
    "gateway": "the public API: create, inspect and cancel streams; the control WebSocket;"
    " the chat page (/); the dashboard (on the admin port)",
    "coordinator": "admission, queueing and placement of streams on runners",
    "runner": "drives a model backend and writes every token to the resume log",
    "streamer": "serves streams to clients over SSE (with resume) and the OpenAI-compatible API",
}
TOOLS = {
    "dev": ("libs.tools.dev", "the whole suite on this machine, for development"),
    "chat": ("libs.tools.chat", "chat with a model in the terminal"),
    "ask": ("libs.tools.ask", "ask one question and print the answer (for scripts)"),
    "top": ("libs.tools.top", "the suite's live figures in the terminal"),
    "bench": ("libs.tools.bench", "measure the suite as a client sees it"),
    "fuzz": ("libs.tools.fuzz", "random and mutated requests against a running suite"),
    "netsim": ("libs.tools.netsim", "a network-weather proxy between clients and the suite"),
}
USAGE = "sluice <command> [options]   (sluice <command> --help for a command's options)"


def _overview() -> str:
    rows = [("services", None), *SERVICES.items(), ("tools", None)]
    rows += [(name, about) for name, (_, about) in TOOLS.items()]
    lines = [f"usage: {USAGE}", ""]
    for name, about in rows:
        lines.append(f"{name}:" if about is None else f"  {name:<12} {about}")
    lines += [
        "",
        "Every command reads its configuration from SLUICE_* environment variables",
        "(the README lists them all).",
    ]
    return "\n".join(lines)


def _service_parser(name: str) -> argparse.ArgumentParser:
    port = getattr(load_settings(env={}), f"{name}_port")
    return argparse.ArgumentParser(
        prog=f"sluice {name}",
        description=f"Run the {name}: {SERVICES[name]}.",
        epilog=f"It listens on SLUICE_{name.upper()}_PORT (default {port}) and reads every"
        " other setting from SLUICE_* environment variables (see the README's Configuration).",
    )


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_overview())
        raise SystemExit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command not in SERVICES and command not in TOOLS:
        raise SystemExit(f"sluice: unknown command {command!r}\n\n{_overview()}")
    try:
        if command in SERVICES:
            _service_parser(command).parse_args(rest)
            importlib.import_module(f"services.{command}.main").main()
        else:
            importlib.import_module(TOOLS[command][0]).main(rest)
    except SettingsError as exc:
        raise SystemExit(f"sluice {command}: bad configuration: {exc}") from None


if __name__ == "__main__":
    main()
