"""Print or update the settings reference in README.md from connector/config.py.

Every setting appears under the same name in the YAML file, the environment
and the chart's ``config`` value; this table is generated from the settings
classes themselves, so it cannot drift. ``--check`` fails when README.md is
out of date (the test suite runs it).

    python scripts/settings_reference.py           # print the table
    python scripts/settings_reference.py --write   # update README.md
    python scripts/settings_reference.py --check   # exit 1 if README.md is stale
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.config import ENV_PREFIX, Settings  # noqa: E402

README = ROOT / "README.md"
START = "<!-- SETTINGS:START -->"
END = "<!-- SETTINGS:END -->"


def _model_of(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _is_secret(annotation: object) -> bool:
    if annotation is SecretStr:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(arg is SecretStr for arg in typing.get_args(annotation))
    return False


def _default(field: FieldInfo) -> str:
    factory = field.default_factory
    value = factory() if factory is not None else field.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, Path):
        text = str(value)
        return "bundled model" if text.endswith("/model") else text
    if value is None:
        return ""
    if isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
        return "see below"
    return json.dumps(value, ensure_ascii=False, default=str)


def rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        nested = _model_of(field.annotation)
        description = " ".join((field.description or "").split())
        if nested is not None:
            yield from rows(nested, dotted + ".")
            continue
        env = ENV_PREFIX + dotted.replace(".", "__").upper()
        if _is_secret(field.annotation):
            description += f" Secret: also `{env}_FILE`."
        yield dotted, env, _default(field), description


def table() -> str:
    lines = [
        "| setting (YAML) | environment | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for dotted, env, default, description in rows(Settings):
        shown = f"`{default}`" if default else ""
        lines.append(f"| `{dotted}` | `{env}` | {shown} | {description} |")
    return "\n".join(lines)


def render_readme(text: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"README.md lacks the {START} / {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="update README.md")
    group.add_argument("--check", action="store_true", help="fail if README.md is stale")
    args = parser.parse_args()
    if not (args.write or args.check):
        print(table())
        return 0
    current = README.read_text(encoding="utf-8")
    wanted = render_readme(current)
    if args.check:
        if current != wanted:
            print("README.md settings table is stale: run scripts/settings_reference.py --write")
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
