"""Logging set-up: one JSON object per line (or plain text for people at a terminal).

Log calls pass metadata as ``extra`` fields (ticket id, outcome, labels,
error kind). Ticket subjects and bodies are never logged unless the operator
sets ``logging.ticket_text``; the ``ticket_text`` field is dropped otherwise.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from connector.config import LoggingSettings

TEXT_FIELDS = ("ticket_text", "subject", "body")


class _DropTicketText(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name in TEXT_FIELDS:
            if name in record.__dict__:
                delattr(record, name)
        return True


class _TextFormatter(logging.Formatter):
    """Message plus the extra fields as key=value, for terminals."""

    _standard = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {
            k: v for k, v in record.__dict__.items() if k not in self._standard and v is not None
        }
        if extras:
            line += " " + " ".join(f"{k}={_short(v)}" for k, v in extras.items())
        return line


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def configure_logging(settings: LoggingSettings, stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if settings.format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not settings.ticket_text:
        handler.addFilter(_DropTicketText())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.level)
    # Per-request access lines would log URLs; the metrics carry the same counts.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # urllib3 logs request lines at DEBUG, query strings included, and Znuny
    # carries its session id there.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
