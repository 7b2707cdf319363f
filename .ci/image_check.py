"""The operator test of the built image: run it the way a cautious operator would.

Starts the built-in Zammad emulator on the host's loopback, then the image
with a read-only root filesystem, a numeric non-root user, every capability
dropped and no privilege escalation, /tmp as the only writable place (as the
Helm chart mounts it), the token from the environment and the configuration
from a read-only file. It asserts:

- /healthz and /readyz answer 200, and how soon after `docker run`;
- every seeded ticket (start-up sweep) and every new one (signed webhook) is
  triaged, each with exactly one internal note;
- the container runs as the configured user and cannot write outside /tmp;
- every line the service logs is JSON, and the token is in none of them;
- the image carries no PyTorch, pip or huggingface-hub;
- the demo runs inside it with no network at all;
- `docker stop` ends it within the drain time, with exit code 0.

It prints the image's size and the sizes of its virtualenv and model. Any
failed assertion exits non-zero with the reason.

    python .ci/image_check.py --image helpdesk-triage:ci
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
USER = "10001:10001"
DRAIN_SECONDS = 10
NEW_TICKETS = 10
FORBIDDEN_MODULES = ("torch", "pip", "huggingface_hub", "setuptools")


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)
    print(f"  ok  {message}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def docker(*args: str, check_rc: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check_rc and done.returncode != 0:
        raise CheckFailed(f"docker {args[0]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def wait_for(what: str, probe: Any, timeout: float) -> float:
    """Seconds until probe() is true; CheckFailed after timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if probe():
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise CheckFailed(f"{what}: not within {timeout:.0f} s")


def service_config(emulator_url: str, service_port: int, webhook_secret: str) -> dict[str, Any]:
    queues = yaml.safe_load((ROOT / "connector" / "emulator" / "demo_queues.yaml").read_text())
    return {
        "helpdesk": "zammad",
        "zammad": {"url": emulator_url, "webhook_secret": webhook_secret},
        "server": {"port": service_port, "drain_seconds": DRAIN_SECONDS},
        "ingest": {"poll_interval_seconds": 2.0},
        "policy": {"intake_queues": ["Users"], "default_priority": "2 normal", "queues": queues},
        "logging": {"level": "INFO", "format": "json"},
    }


def run_check(image: str) -> None:
    size = int(docker("image", "inspect", "--format", "{{.Size}}", image).strip())
    sizes = docker("run", "--rm", "--network", "none", "--entrypoint", "du", image,
                   "-sm", "/opt/venv", "/app/model")  # fmt: skip
    print(f"image {image}: {size / 1e6:.0f} MB")
    for line in sizes.splitlines():
        megabytes, path = line.split()
        print(f"  {path}: {megabytes} MB")

    present = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c",
        "import importlib.util, sys; "
        f"print(' '.join(m for m in {FORBIDDEN_MODULES!r} if importlib.util.find_spec(m)))",
    ).split()  # fmt: skip
    check(not present, f"no {', '.join(FORBIDDEN_MODULES)} in the image (found: {present or '-'})")

    demo = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
         "--cap-drop", "ALL", image, "demo"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    summary = [line for line in demo.stdout.splitlines() if " tickets in " in line]
    check(demo.returncode == 0, f"the demo runs in the image, offline: {summary}")

    token = secrets.token_hex(20)
    webhook_secret = secrets.token_hex(16)
    emulator_port, service_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    service_url = f"http://127.0.0.1:{service_port}"
    env = dict(
        os.environ, TRIAGE_EMULATOR_TOKEN=token, TRIAGE_EMULATOR_WEBHOOK_SECRET=webhook_secret
    )
    emulator = subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "emulator", "--port", str(emulator_port),
         "--webhook-url", f"{service_url}/webhooks/zammad"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    name = f"helpdesk-triage-check-{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix="image-check-"))
    try:
        wait_for("emulator", lambda: requests.get(f"{emulator_url}/_emulator/health").ok, 30)
        api = requests.Session()
        api.headers["Authorization"] = f"Token token={token}"
        tickets = api.get(f"{emulator_url}/api/v1/tickets?expand=true&per_page=100").json()
        # Closed, pending or already triaged before the service starts: not its business.
        closed = {t["id"] for t in tickets if t["state"] not in ("new", "open")}
        closed |= {
            t["id"]
            for t in tickets
            if "ai-triaged"
            in api.get(f"{emulator_url}/api/v1/tags?object=Ticket&o_id={t['id']}").json()["tags"]
        }
        config = workdir / "config.yaml"
        config.write_text(
            yaml.safe_dump(service_config(emulator_url, service_port, webhook_secret))
        )
        config.chmod(0o644)
        workdir.chmod(0o755)
        started = time.monotonic()
        docker(
            "run", "--detach", "--name", name, "--network", "host",
            "--read-only", "--tmpfs", "/tmp:rw,size=64m", "--user", USER,
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--env", "TRIAGE_CONFIG_FILE=/etc/helpdesk-triage/config.yaml",
            "--env", f"TRIAGE_ZAMMAD__TOKEN={token}",
            "--volume", f"{config}:/etc/helpdesk-triage/config.yaml:ro",
            image,
        )  # fmt: skip
        alive = wait_for("/healthz 200", lambda: requests.get(f"{service_url}/healthz").ok, 60)
        ready = wait_for("/readyz 200", lambda: requests.get(f"{service_url}/readyz").ok, 60)
        check(True, f"/healthz 200 after {alive:.1f} s, /readyz 200 after {ready:.1f} s")
        print(f"  (from docker run: {time.monotonic() - started:.1f} s)")

        inspect = json.loads(docker("inspect", name))[0]
        host = inspect["HostConfig"]
        check(host["ReadonlyRootfs"], "root filesystem is read-only")
        check(host["CapDrop"] == ["ALL"], "every capability dropped")
        uid = docker("exec", name, "python", "-c", "import os; print(os.getuid(), os.getgid())")
        check(uid.split() == ["10001", "10001"], f"runs as {USER} (saw {uid.strip()})")
        writable = docker("exec", name, "python", "-c", _WRITE_PROBE)
        check(writable.split() == ["/tmp"], f"writable only under /tmp (saw {writable.split()})")

        created = requests.post(
            f"{emulator_url}/_emulator/tickets/bulk",
            json={"count": NEW_TICKETS, "webhooks": True},
            timeout=10,
        )
        created.raise_for_status()

        def all_triaged() -> bool:
            timings = requests.get(f"{emulator_url}/_emulator/timings").json()["tickets"]
            return all(t["triaged"] for i, t in timings.items() if int(i) not in closed)

        took = wait_for(
            "every ticket triaged", all_triaged, float(os.environ.get("IMAGE_CHECK_WAIT", "120"))
        )
        timings = requests.get(f"{emulator_url}/_emulator/timings").json()
        stats = requests.get(f"{emulator_url}/_emulator/stats").json()
        notes = {int(i): c["internal_notes_created"] for i, c in stats["tickets"].items()}
        ids = [int(i) for i in timings["tickets"] if int(i) not in closed]
        total = len(ids)
        check(True, f"{total} open tickets triaged ({NEW_TICKETS} by webhook) in {took:.1f} s")
        once = [i for i in ids if notes.get(i, 0) == 1]
        check(len(once) == total, f"one internal note on each of {len(once)}/{total} tickets")
        touched = sorted(i for i in closed if notes.get(i, 0))
        check(
            not touched,
            f"the {len(closed)} closed or triaged tickets left alone (touched: {touched})",
        )
        check(stats["webhooks"]["delivered"] >= NEW_TICKETS, "webhooks delivered and accepted")

        stop_started = time.monotonic()
        docker("stop", "--time", str(DRAIN_SECONDS + 20), name, timeout=DRAIN_SECONDS + 60)
        stopped = time.monotonic() - stop_started
        state = json.loads(docker("inspect", name))[0]["State"]
        check(
            stopped <= DRAIN_SECONDS + 2 and state["ExitCode"] == 0,
            f"docker stop: exited {state['ExitCode']} after {stopped:.1f} s "
            f"(drain {DRAIN_SECONDS} s)",
        )

        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=True)
        lines = [line for line in (logs.stdout + logs.stderr).splitlines() if line.strip()]
        not_json = [line for line in lines if not _is_json_object(line)]
        check(bool(lines) and not not_json, f"all {len(lines)} log lines are JSON {not_json[:2]}")
        check(token not in logs.stdout + logs.stderr, "the token appears in no log line")
    except CheckFailed:
        if os.environ.get("IMAGE_CHECK_DEBUG"):
            print(requests.get(f"{emulator_url}/_emulator/timings").text[:3000])
            print(requests.get(f"{emulator_url}/_emulator/stats").text[:3000])
        tail = subprocess.run(
            ["docker", "logs", "--tail", "30", name], capture_output=True, text=True
        )
        print(f"  last log lines of the container:\n{tail.stdout}{tail.stderr}", file=sys.stderr)
        raise
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)
        emulator.terminate()
        emulator.wait(timeout=10)
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()


# Which of the image's top-level directories the service's user can create a file in.
_WRITE_PROBE = """
import os, tempfile
for top in sorted(os.listdir("/")):
    path = "/" + top
    if top in ("proc", "sys", "dev") or not os.path.isdir(path) or os.path.islink(path):
        continue
    try:
        tempfile.TemporaryFile(dir=path).close()
        print(path)
    except OSError:
        pass
"""


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="helpdesk-triage:ci")
    args = parser.parse_args()
    print(f"operator test of {args.image}")
    try:
        run_check(args.image)
    except CheckFailed as failure:
        print(f"  FAILED  {failure}", file=sys.stderr)
        return 1
    print("operator test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
