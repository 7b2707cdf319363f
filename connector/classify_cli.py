"""``helpdesk-triage classify``: run the classifier over a file of tickets.

Input is CSV (columns ``subject`` and ``body``, optional ``id``) or JSONL (one
object per line with the same keys), chosen by the file extension or
``--format``; ``-`` is stdin. ``--text`` classifies a single ticket instead.
Output is one JSON object per ticket, in input order::

    {"id": ..., "predictions": {"queue": {"label": "...", "confidence": 0.93,
     "probabilities": {...}}, ...}, "model_version": "..."}

``id`` is the input's id, or the ticket's 1-based position when it has none.

A malformed input (unreadable file, missing column, a line that is not JSON or
not an object, a non-text field) stops the run with ``FILE:LINE: reason`` on
stderr and exit status 1. A file output is written to a temporary file and
renamed at the end, so it is either complete or absent; on stdout the lines
already written stay, and stderr says how many there were.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from connector.config import BUNDLED_MODEL
from connector.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from connector.classifier import Classifier
    from connector.predictor import Predictor

FORMATS = ("csv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
CHUNK = 256  # tickets per classifier call: bounds memory, lets progress show
PROGRESS_INTERVAL_SECONDS = 2.0
EXIT_INPUT_ERROR = 1


class InputError(Exception):
    """The input is malformed; the message starts with ``FILE:LINE:``."""


@dataclass(frozen=True, slots=True)
class Record:
    """One ticket read from the input, with where it came from."""

    id: Any
    subject: str
    body: str
    line: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", "-i", help="CSV or JSONL file of tickets; - for stdin")
    source.add_argument("--text", help="classify this one ticket body instead of a file")
    parser.add_argument("--subject", default="", help="subject for --text")
    parser.add_argument(
        "--output", "-o", default="-", help="where to write JSON lines; - for stdout (default)"
    )
    parser.add_argument("--format", choices=FORMATS, help="input format (default: from extension)")
    parser.add_argument(
        "--model", type=Path, default=BUNDLED_MODEL, help="model directory (default: bundled)"
    )
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        help="triage.yaml: its model and policy.queues, the same routing as the service",
    )
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def main(args: argparse.Namespace) -> int:
    # heavy: onnxruntime, only when classifying
    from connector.classifier import Classifier
    from connector.config import PolicySettings, load_settings
    from connector.predictor import Predictor

    policy = PolicySettings()
    model_path = args.model
    if args.config is not None:
        try:
            settings = load_settings(args.config)
        except ConfigError as error:
            print(f"classify: {error}", file=sys.stderr)
            return EXIT_INPUT_ERROR
        policy = settings.policy
        if args.model == BUNDLED_MODEL:
            model_path = settings.model.path
    try:
        classifier: Predictor = Predictor(Classifier.load(model_path, threads=args.threads), policy)
    except ModelError as error:
        print(f"classify: model {model_path}: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except ConfigError as error:
        print(f"classify: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    if args.text is not None:
        records: Iterator[Record] = iter([Record(1, args.subject, args.text, 0)])
        input_name = "--text"
    else:
        input_name = "<stdin>" if args.input == "-" else args.input
        try:
            records = read_records(args.input, args.format or format_of(args.input))
        except InputError as error:
            print(f"classify: {error}", file=sys.stderr)
            return EXIT_INPUT_ERROR
    try:
        writer = OutputWriter(args.output)
    except OSError as error:
        print(f"classify: {args.output}: cannot write: {error.strerror}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    progress = Progress(enabled=not args.quiet and args.text is None)
    try:
        for chunk in chunks(records, CHUNK):
            for line in classify(classifier, chunk):
                writer.write(line)
            progress.update(len(chunk))
    except InputError as error:
        writer.abort()
        written = f" ({writer.count} lines were written to stdout)" if writer.is_stdout else ""
        print(f"classify: {error}{written}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    progress.finish(writer.count, input_name, args.output)
    return 0


def format_of(path: str) -> str:
    if path == "-":
        raise InputError("<stdin>: cannot tell the format; pass --format csv or --format jsonl")
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise InputError(f"{path}: unknown extension {suffix!r}; pass --format csv or jsonl")
    return _EXTENSIONS[suffix]


def classify(classifier: Classifier | Predictor, records: list[Record]) -> list[str]:
    from connector.classifier import TextInput, prediction_to_json

    predictions = classifier.predict([TextInput(r.subject, r.body) for r in records])
    return [
        json.dumps(
            {
                "id": record.id,
                "predictions": prediction_to_json(prediction),
                "model_version": prediction.model_version,
            },
            ensure_ascii=False,
        )
        for record, prediction in zip(records, predictions, strict=True)
    ]


def chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- reading ---------------------------------------------------------------------------


def read_records(path: str, input_format: str) -> Iterator[Record]:
    """Records of a CSV or JSONL file (``-`` = stdin), validated as they are read."""
    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            stream: IO[bytes] | IO[str] = getattr(sys.stdin, "buffer", sys.stdin)
        else:
            stream = open(path, "rb")  # noqa: SIM115 - closed by _records
    except OSError as error:
        raise InputError(f"{name}: cannot read: {error.strerror}") from None
    return _records(stream, name, input_format, close=path != "-")


def _records(
    stream: IO[bytes] | IO[str], name: str, input_format: str, *, close: bool
) -> Iterator[Record]:
    try:
        lines = _decoded_lines(stream, name)
        if input_format == "csv":
            yield from _csv_records(lines, name)
        else:
            yield from _jsonl_records(lines, name)
    except OSError as error:
        raise InputError(f"{name}: cannot read: {error.strerror}") from None
    finally:
        if close:
            stream.close()


def _decoded_lines(stream: IO[bytes] | IO[str], name: str) -> Iterator[str]:
    """Lines as text, decoded one by one so that a bad byte is reported on its own line."""
    source: Iterable[bytes | str] = stream
    for number, raw in enumerate(source, start=1):
        if isinstance(raw, str):
            yield raw
            continue
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{name}:{number}: not UTF-8 text") from None


def _csv_records(lines: Iterator[str], name: str) -> Iterator[Record]:
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise InputError(f"{name}:1: {error}") from None
    if header is None:
        return
    columns = [column.strip() for column in header]
    for required in ("subject", "body"):
        if required not in columns:
            raise InputError(f"{name}:1: missing column {required!r} (found {columns})")
    subject_at, body_at = columns.index("subject"), columns.index("body")
    id_at = columns.index("id") if "id" in columns else None
    position = 0
    line = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise InputError(f"{name}:{line}: {error}") from None
        if not values or all(not v.strip() for v in values):
            line = reader.line_num + 1
            continue  # blank line
        position += 1
        if len(values) != len(columns):
            raise InputError(f"{name}:{line}: expected {len(columns)} fields, got {len(values)}")
        record_id = values[id_at] if id_at is not None and values[id_at] else position
        yield Record(record_id, values[subject_at], values[body_at], line)
        line = reader.line_num + 1


def _jsonl_records(lines: Iterator[str], name: str) -> Iterator[Record]:
    position = 0
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{name}:{line}: not JSON: {error.msg}") from None
        if not isinstance(data, dict):
            raise InputError(f"{name}:{line}: expected a JSON object, got {type(data).__name__}")
        if "subject" not in data and "body" not in data:
            raise InputError(f"{name}:{line}: needs a 'subject' or 'body' key")
        position += 1
        fields = {}
        for key in ("subject", "body"):
            value = data.get(key)
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise InputError(f"{name}:{line}: {key!r} must be a string")
            fields[key] = value
        yield Record(data.get("id", position), fields["subject"], fields["body"], line)


# -- writing ---------------------------------------------------------------------------


class OutputWriter:
    """JSON lines to stdout, or to a temporary file renamed over ``path`` on commit."""

    def __init__(self, path: str) -> None:
        self.is_stdout = path == "-"
        self.count = 0
        self._path = Path(path)
        self._temporary: Path | None = None
        if self.is_stdout:
            self._stream: IO[str] = sys.stdout
        else:
            directory = self._path.parent
            handle, name = tempfile.mkstemp(
                dir=directory, prefix=f".{self._path.name}.", suffix=".tmp"
            )
            self._temporary = Path(name)
            self._stream = os.fdopen(handle, "w", encoding="utf-8")

    def write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self.count += 1

    def commit(self) -> None:
        if self._temporary is None:
            self._stream.flush()
            return
        self._stream.close()
        os.replace(self._temporary, self._path)
        self._temporary = None

    def abort(self) -> None:
        if self._temporary is None:
            with suppress(OSError):
                self._stream.flush()
            return
        self._stream.close()
        with suppress(OSError):
            self._temporary.unlink()
        self._temporary = None


class Progress:
    """Occasional "N tickets" lines on stderr for long runs, and a summary."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.started = self.last = time.monotonic()
        self.done = 0

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and now - self.last >= PROGRESS_INTERVAL_SECONDS:
            rate = self.done / max(now - self.started, 1e-9)
            print(f"classify: {self.done} tickets ({rate:.0f}/s)", file=sys.stderr, flush=True)
            self.last = now

    def finish(self, count: int, source: str, target: str) -> None:
        if not self.enabled:
            return
        seconds = time.monotonic() - self.started
        destination = "stdout" if target == "-" else target
        print(
            f"classify: {count} tickets from {source} to {destination} in {seconds:.1f} s",
            file=sys.stderr,
        )
