"""Data preparation commands: `python -m lightning_resnet.prepare <command> [args]`.

Each command is a module of this package with `main(argv) -> int` (the exit status).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "scan": "decode every image of a dataset config and list every unreadable file",
    "openimages": "crop Open Images boxes into an ImageFolder (the surveillance dataset)",
}


def usage() -> str:
    lines = [f"  {name:<12} {about}" for name, about in COMMANDS.items()]
    return "usage: python -m lightning_resnet.prepare <command> [args]\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, *rest = argv
    if command not in COMMANDS:  # a whitelist: never import a module named on the command line
        print(f"unknown command {command!r}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"lightning_resnet.tasks.prepare.{command}")
    return module.main(rest)
