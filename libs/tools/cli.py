"""``sluice``: one console script for the four services and the developer tools."""

from __future__ import annotations

import argparse
import importlib
import sys

from libs.common.settings import SettingsError

SERVICES = ("gateway", "coordinator", "runner", "streamer")
TOOLS = {
    "dev": "libs.tools.dev",
    "bench": "libs.tools.bench",
    "top": "libs.tools.top",
    "fuzz": "libs.tools.fuzz",
}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="sluice", description=__doc__)
    parser.add_argument("command", choices=[*SERVICES, *TOOLS], help="service to run, or tool")
    if not args or args[0] in ("-h", "--help"):
        parser.print_help()
        raise SystemExit(0 if args else 2)
    command = parser.parse_args(args[:1]).command
    module = f"services.{command}.main" if command in SERVICES else TOOLS[command]
    try:
        importlib.import_module(module).main(*([args[1:]] if command in TOOLS else []))
    except SettingsError as exc:
        raise SystemExit(f"sluice {command}: bad configuration: {exc}") from None


if __name__ == "__main__":
    main()
