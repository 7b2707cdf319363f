"""``helpdesk-triage run``: the triage service against the configured helpdesk."""

from __future__ import annotations

import argparse
import logging
import sys

from connector.config import load_settings
from connector.errors import ConfigError, HelpdeskError, ModelError

log = logging.getLogger("connector")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML configuration file (default: $TRIAGE_CONFIG_FILE)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check configuration, model and helpdesk, then exit (0 when all is well)",
    )


def main(args: argparse.Namespace) -> int:
    from connector.logs import configure_logging
    from connector.service import Service

    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"helpdesk-triage: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.logging)
    try:
        service = Service(settings)
        if args.check:
            service.check()
            print("configuration, model and helpdesk are fine", file=sys.stderr)
            return 0
        # Serve health and metrics while waiting for the helpdesk, so a probe
        # sees "alive, not ready" rather than nothing.
        service.start_server_thread()
        service.check_until_reachable()
        service.start_background()
        log.info(
            "started",
            extra={
                "helpdesk": settings.helpdesk.value,
                "mode": settings.policy.mode,
                "model_version": service.classifier.version,
                "url": service.url,
            },
        )
        service.wait_for_exit()
        return 0
    except (ConfigError, ModelError) as error:
        log.error("cannot start", extra={"error": str(error)})
        print(f"helpdesk-triage: {error}", file=sys.stderr)
        return 2
    except HelpdeskError as error:
        log.error("helpdesk check failed", extra={"error": str(error)})
        print(f"helpdesk-triage: {error}", file=sys.stderr)
        return 3
