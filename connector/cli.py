"""The ``helpdesk-triage`` command: one entry point, one subcommand per job.

Each subcommand lives in its own module with ``add_arguments(parser)`` and
``main(args) -> int``. Those modules keep heavy imports (onnxruntime, the web
server) inside ``main``, so building the parser stays cheap for every command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from connector import __version__

# subcommand -> module providing ``add_arguments(parser)`` and ``main(args) -> int``
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("connector.service_cli", "run the triage service against the configured helpdesk"),
    "demo": ("connector.demo", "run the whole pipeline against the built-in demo helpdesk"),
    "emulator": ("connector.emulator.cli", "serve the built-in Zammad-compatible demo helpdesk"),
    "classify": ("connector.classify_cli", "classify tickets from a CSV or JSONL file"),
    "print-config": ("connector.config_cli", "print the effective configuration, secrets redacted"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="helpdesk-triage",
        description="AI triage (queue, priority, sentiment) for Zammad, Znuny/OTRS/OTOBO and RT.",
    )
    parser.add_argument("--version", action="version", version=f"helpdesk-triage {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, summary) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        sub.set_defaults(_module=module_name)
        module = importlib.import_module(module_name)
        module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help(sys.stderr)
        return 2
    module = importlib.import_module(args._module)
    result: int = module.main(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
