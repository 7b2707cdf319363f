"""``helpdesk-triage print-config``: the effective configuration, secrets redacted."""

from __future__ import annotations

import argparse
import sys

import yaml

from connector.config import load_settings, redacted
from connector.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML configuration file (default: $TRIAGE_CONFIG_FILE)")


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"helpdesk-triage: {error}", file=sys.stderr)
        return 2
    yaml.safe_dump(redacted(settings), sys.stdout, sort_keys=False, allow_unicode=True)
    return 0
