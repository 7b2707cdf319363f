"""Benchmark the running sidecar end to end against the emulator, as two processes on loopback.

    python scripts/benchmark_service.py --model model/ --tickets 2000 --rates 20,100

Starts ``helpdesk-triage emulator`` (empty: groups and users, no tickets) and
``helpdesk-triage run`` with a generated YAML configuration pointing at it,
each in its own process, so the sidecar's CPU time and memory are its own.
Then measures:

1. **Throughput.** ``POST /_emulator/tickets/bulk`` creates N tickets without
   webhooks; the sidecar's poll takes them. Tickets/s from the first creation
   to the last triage mark (and the steady rate between 10 % and 90 % done),
   from the emulator's ``/_emulator/timings``.
2. **Latency.** Tickets created one by one through ``POST /api/v1/tickets``
   at a fixed arrival rate (open loop) with webhooks on; webhook-to-written
   p50/p95/p99 is the time from creation to the ``ai-triaged`` tag, both as
   the emulator's clock saw them.
3. **Memory and CPU** of the sidecar process: peak resident set (VmHWM) and
   current RSS from /proc, CPU seconds (user + system) per phase and in all.
4. **Requests per ticket** from the emulator's request counts (the driver's
   own ticket creations are left out).

Each phase runs ``--repeat`` times and the median is reported. Prints the
machine, the load average (other work on the host makes CPU figures noisy),
thread and concurrency settings, model version and the exact command; writes
JSON with ``--output``. Everything is bounded (``--max-seconds`` overall, a
timeout per phase) and loopback only; both processes are stopped on any exit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.config import BUNDLED_MODEL  # noqa: E402
from connector.emulator import DEMO_TOKEN  # noqa: E402
from connector.emulator.seed import create_payloads  # noqa: E402

LOOPBACK = "127.0.0.1"
TICKS = os.sysconf("SC_CLK_TCK")
DRIVER_CREATE = "POST /api/v1/tickets"  # the driver's own requests, not the sidecar's
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class BenchmarkError(RuntimeError):
    pass


# -- processes ---------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of a process, in KiB."""
    status: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            status[key] = int(value.split()[0])
    return status


def command_prefix(source: Path | None = None) -> list[str]:
    """``helpdesk-triage`` from this interpreter's environment (else ``python -m``).

    With ``source`` (another checkout), the command runs that tree's ``connector``.
    """
    script = Path(sys.executable).with_name("helpdesk-triage")
    if script.exists() and source is None:
        return [str(script)]
    return [sys.executable, "-m", "connector.cli"]


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    # The generated YAML is the whole configuration: TRIAGE_* variables would override it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def stop(child: Child, timeout: float = 30.0) -> None:
    """SIGTERM, wait for the drain, then SIGKILL if it did not exit."""
    if not child.alive():
        return
    child.process.send_signal(signal.SIGTERM)
    try:
        child.process.wait(timeout)
    except subprocess.TimeoutExpired:
        child.process.kill()
        child.process.wait(5)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the benchmark itself is killed."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@contextmanager
def started(
    name: str, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path | None = None
) -> Iterator[Child]:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            preexec_fn=_die_with_parent,
        )
    child = Child(name, process, log_path)
    try:
        yield child
    finally:
        stop(child)


def wait_for(url: str, child: Child, timeout: float, session: requests.Session) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchmarkError(f"{child.name} exited early:\n{child.log_tail()}")
        try:
            if session.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise BenchmarkError(f"{child.name} not ready at {url} after {timeout} s:\n{child.log_tail()}")


# -- the machine and the model ------------------------------------------------------------


def machine() -> dict[str, Any]:
    model_name = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model_name,
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def model_version(path: Path) -> str:
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BenchmarkError(f"cannot read {path / 'manifest.json'}: {error}") from None
    return str(manifest.get("model_version") or "unknown")


# -- the run -----------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    emulator: Child
    sidecar: Child
    emulator_url: str
    session: requests.Session
    deadline: float
    payloads: list[dict[str, Any]] = field(default_factory=list)

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BenchmarkError(f"--max-seconds {self.args.max_seconds} reached")
        return left

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.emulator_url}{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def timings(self, first: int, last: int, *, tickets: bool) -> dict[str, Any]:
        params = {"from_id": first, "to_id": last, "tickets": str(tickets).lower()}
        answer: dict[str, Any] = self.admin("GET", "/_emulator/timings", params=params)
        return answer

    def wait_triaged(self, first: int, last: int, timeout: float) -> dict[str, Any]:
        """Poll the counts until every ticket in the range is triaged, then read the times."""
        expected = last - first + 1
        deadline = time.monotonic() + min(timeout, self.remaining())
        while time.monotonic() < deadline:
            for child in (self.emulator, self.sidecar):
                if not child.alive():
                    raise BenchmarkError(f"{child.name} exited:\n{child.log_tail()}")
            counts = self.timings(first, last, tickets=False)
            if counts["triaged_count"] >= expected:
                break
            time.sleep(0.25)
        return self.timings(first, last, tickets=True)

    def requests_since_reset(self) -> tuple[int, dict[str, int]]:
        stats = self.admin("GET", "/_emulator/stats")
        by_endpoint = {k: v for k, v in stats["requests"].items() if k != DRIVER_CREATE}
        return sum(by_endpoint.values()), by_endpoint

    def cpu(self) -> tuple[float, float]:
        return cpu_seconds(self.sidecar.pid), cpu_seconds(self.emulator.pid)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summarise_times(timings: dict[str, Any]) -> dict[str, Any]:
    rows = list(timings["tickets"].values())
    created = [r["created"] for r in rows]
    done = sorted(r["triaged"] for r in rows if r["triaged"] is not None)
    latencies = [r["triaged"] - r["created"] for r in rows if r["triaged"] is not None]
    result: dict[str, Any] = {"tickets": len(rows), "triaged": len(done)}
    if not done:
        return result
    span = done[-1] - min(created)
    result["seconds"] = span
    result["tickets_per_second"] = len(done) / span if span > 0 else float("inf")
    # Steady state: the rate between 10 % and 90 % triaged, past start-up and tail.
    lo, hi = done[int(len(done) * 0.1)], done[min(len(done) - 1, int(len(done) * 0.9))]
    steady_count = int(len(done) * 0.9) - int(len(done) * 0.1)
    if hi > lo and steady_count > 0:
        result["steady_tickets_per_second"] = steady_count / (hi - lo)
    result["latency_ms"] = {
        "p50": percentile(latencies, 50) * 1000,
        "p95": percentile(latencies, 95) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "max": max(latencies) * 1000,
    }
    return result


def warm_up(run: Run, count: int) -> None:
    created = run.admin("POST", "/_emulator/tickets/bulk", json={"count": count})
    ids = created["ticket_ids"]
    run.wait_triaged(ids[0], ids[-1], run.args.phase_timeout)


def throughput_phase(run: Run, count: int) -> dict[str, Any]:
    run.admin("DELETE", "/_emulator/stats")
    cpu_before = run.cpu()
    created = run.admin("POST", "/_emulator/tickets/bulk", json={"count": count})
    ids = created["ticket_ids"]
    timings = run.wait_triaged(ids[0], ids[-1], run.args.phase_timeout)
    cpu_after = run.cpu()
    requests_total, by_endpoint = run.requests_since_reset()
    result = summarise_times(timings)
    result.pop("latency_ms", None)  # bulk arrivals: time in queue, not latency
    result["requests_per_ticket"] = requests_total / count
    result["requests_by_endpoint"] = by_endpoint
    result["sidecar_cpu_seconds"] = cpu_after[0] - cpu_before[0]
    result["emulator_cpu_seconds"] = cpu_after[1] - cpu_before[1]
    result["sidecar_cpu_ms_per_ticket"] = result["sidecar_cpu_seconds"] * 1000 / count
    return result


def latency_phase(run: Run, rate: float, seconds: float) -> dict[str, Any]:
    """Open loop: ticket i is created at start + i / rate, whatever the sidecar is doing."""
    run.admin("DELETE", "/_emulator/stats")
    cpu_before = run.cpu()
    count = max(1, round(rate * seconds))
    url = f"{run.emulator_url}/api/v1/tickets"
    ids: list[int] = []
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        payload = run.payloads[i % len(run.payloads)]
        response = run.session.post(url, json=payload, timeout=10)
        if response.status_code != 201:
            raise BenchmarkError(f"creating a ticket answered {response.status_code}")
        ids.append(int(response.json()["id"]))
    sent_seconds = time.monotonic() - start
    timings = run.wait_triaged(ids[0], ids[-1], run.args.phase_timeout)
    cpu_after = run.cpu()
    requests_total, _ = run.requests_since_reset()
    result = summarise_times(timings)
    result.pop("steady_tickets_per_second", None)
    result["rate_asked"] = rate
    result["rate_sent"] = count / sent_seconds if sent_seconds > 0 else float("inf")
    result["requests_per_ticket"] = requests_total / count
    result["sidecar_cpu_seconds"] = cpu_after[0] - cpu_before[0]
    result["sidecar_cpu_share"] = result["sidecar_cpu_seconds"] / max(sent_seconds, 1e-9)
    return result


def sidecar_config(args: argparse.Namespace, emulator_url: str, port: int, secret: str) -> Any:
    ingest: dict[str, Any] = {
        "poll_interval_seconds": args.poll_interval,
        "sweep_interval_seconds": 600.0,
        "page_size": 200,
    }
    if args.concurrency is not None:
        ingest["concurrency"] = args.concurrency
    model: dict[str, Any] = {"path": str(args.model)}
    if args.threads is not None:
        model["threads"] = args.threads
    return {
        "helpdesk": "zammad",
        "zammad": {"url": emulator_url, "token": DEMO_TOKEN, "webhook_secret": secret},
        "server": {"host": LOOPBACK, "port": port, "drain_seconds": 10},
        "model": model,
        "ingest": ingest,
        "logging": {"level": "INFO", "format": "json"},
    }


def number(value: float | None, digits: int = 0) -> str:
    """A figure for the report; "n/a" when no run produced it (nothing was triaged)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def median_of(results: list[dict[str, Any]], key: str, sub: str | None = None) -> float | None:
    values = []
    for r in results:
        value = r.get(key)
        if sub is not None:
            value = value.get(sub) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(float(value))
    return statistics.median(values) if values else None


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.max_seconds
    secret = secrets.token_hex(16)
    emulator_port, sidecar_port = free_port(), free_port()
    emulator_url = f"http://{LOOPBACK}:{emulator_port}"
    sidecar_url = f"http://{LOOPBACK}:{sidecar_port}"
    emulator_prefix = command_prefix(args.emulator_source)
    sidecar_prefix = command_prefix(args.sidecar_source)
    report: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine(),
        "model": {"path": str(args.model), "version": model_version(args.model)},
    }
    with tempfile.TemporaryDirectory(prefix="benchmark-service-") as tmp:
        work = Path(tmp)
        config = sidecar_config(args, emulator_url, sidecar_port, secret)
        config_path = work / "sidecar.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        report["sidecar_config"] = {k: v for k, v in config.items() if k != "zammad"}
        emulator_argv = [
            *emulator_prefix,
            "emulator",
            "--host",
            LOOPBACK,
            "--port",
            str(emulator_port),
            "--empty",
            "--webhook-url",
            f"{sidecar_url}/webhooks/zammad",
        ]
        sidecar_argv = [*sidecar_prefix, "run", "--config", str(config_path)]
        sidecar_env = child_environment({})
        if args.sidecar_source is not None:
            sidecar_env["PYTHONPATH"] = str(args.sidecar_source)
            report["sidecar_source"] = str(args.sidecar_source)
        report["processes"] = {
            "emulator": shlex.join(emulator_argv),
            "sidecar": shlex.join(sidecar_argv),
        }
        session = requests.Session()
        session.trust_env = False
        session.headers["Authorization"] = f"Token token={DEMO_TOKEN}"
        emulator_env = child_environment({"TRIAGE_EMULATOR_WEBHOOK_SECRET": secret})
        if args.emulator_source is not None:
            emulator_env["PYTHONPATH"] = str(args.emulator_source)
            report["emulator_source"] = str(args.emulator_source)
        with (
            session,
            started(
                "emulator", emulator_argv, emulator_env, work, args.emulator_source
            ) as emulator,
        ):
            wait_for(f"{emulator_url}/_emulator/health", emulator, 30, session)
            # From another tree's directory: ``python -m`` puts the working directory first.
            with started(
                "sidecar", sidecar_argv, sidecar_env, work, cwd=args.sidecar_source
            ) as sidecar:
                try:
                    wait_for(f"{sidecar_url}/readyz", sidecar, 120, session)
                    run = Run(args, emulator, sidecar, emulator_url, session, deadline)
                    run.payloads = create_payloads()
                    report["sidecar_after_start"] = memory_kib(sidecar.pid)
                    warm_up(run, args.warmup)
                    report["throughput"] = [
                        throughput_phase(run, args.tickets) for _ in range(args.repeat)
                    ]
                    report["latency"] = {
                        str(rate): [
                            latency_phase(run, rate, args.rate_seconds) for _ in range(args.repeat)
                        ]
                        for rate in args.rates
                    }
                    report["sidecar_memory_kib"] = memory_kib(sidecar.pid)
                    report["sidecar_cpu_seconds_total"] = cpu_seconds(sidecar.pid)
                    report["emulator_cpu_seconds_total"] = cpu_seconds(emulator.pid)
                except BaseException:
                    print(f"--- sidecar log (tail) ---\n{sidecar.log_tail()}", file=sys.stderr)
                    raise
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


# -- output ------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"command: {report['command']}")
    print(
        f"machine: {m['cpu']}, {m['cpus_usable']} usable of {m['cpus_online']} CPUs, "
        f"Python {m['python']}, load average {m['load_average']} -> {m['load_average_end']}"
    )
    print(f"model: {report['model']['version']} ({report['model']['path']})")
    config = report["sidecar_config"]
    ingest, model = config["ingest"], config["model"]
    print(
        f"sidecar: concurrency {ingest.get('concurrency', 'default (16)')}, "
        f"model threads {model.get('threads', 'default (CPU limit)')}, "
        f"poll every {ingest['poll_interval_seconds']} s, log level {config['logging']['level']}"
    )
    source = report.get("sidecar_source")
    print(f"  {report['processes']['sidecar']}" + (f"  (PYTHONPATH={source})" if source else ""))
    source = report.get("emulator_source")
    print(f"  {report['processes']['emulator']}" + (f"  (PYTHONPATH={source})" if source else ""))
    print()
    runs = report["throughput"]
    print(f"throughput ({runs[0]['tickets']} tickets by bulk creation, poll intake):")
    for i, r in enumerate(runs, 1):
        print(
            f"  run {i}: {r.get('tickets_per_second', 0):7.1f} tickets/s overall, "
            f"{r.get('steady_tickets_per_second', 0):7.1f} steady, "
            f"{r['triaged']}/{r['tickets']} in {r.get('seconds', 0):.2f} s, "
            f"{r['requests_per_ticket']:.2f} requests/ticket, "
            f"sidecar CPU {r['sidecar_cpu_ms_per_ticket']:.2f} ms/ticket, "
            f"emulator CPU {r['emulator_cpu_seconds']:.1f} s"
        )
    print(
        f"  median: {number(median_of(runs, 'tickets_per_second'), 1)} tickets/s overall, "
        f"{number(median_of(runs, 'steady_tickets_per_second'), 1)} steady"
    )
    by_endpoint = runs[-1]["requests_by_endpoint"]
    count = runs[-1]["tickets"]
    print(
        "  requests per ticket (last run): "
        + ", ".join(f"{k} {v / count:.2f}" for k, v in sorted(by_endpoint.items()))
    )
    print()
    print("webhook-to-written latency (created -> ai-triaged tag, emulator clock):")
    for rate, results in report["latency"].items():
        for i, r in enumerate(results, 1):
            lat = r.get("latency_ms", {})
            print(
                f"  {float(rate):5.0f}/s run {i}: sent {r['rate_sent']:.1f}/s, "
                f"{r['triaged']}/{r['tickets']} triaged, p50 {lat.get('p50', 0):.0f} ms, "
                f"p95 {lat.get('p95', 0):.0f} ms, p99 {lat.get('p99', 0):.0f} ms, "
                f"max {lat.get('max', 0):.0f} ms, {r['requests_per_ticket']:.2f} req/ticket, "
                f"sidecar CPU {r['sidecar_cpu_share'] * 100:.0f} % of a core"
            )
        print(
            f"  {float(rate):5.0f}/s median: "
            f"p50 {number(median_of(results, 'latency_ms', 'p50'))} ms, "
            f"p95 {number(median_of(results, 'latency_ms', 'p95'))} ms, "
            f"p99 {number(median_of(results, 'latency_ms', 'p99'))} ms"
        )
    print()
    mem = report["sidecar_memory_kib"]
    print(
        f"sidecar memory: peak RSS (VmHWM) {mem['VmHWM'] / 1024:.0f} MiB, "
        f"RSS now {mem['VmRSS'] / 1024:.0f} MiB "
        f"(after start-up: {report['sidecar_after_start']['VmRSS'] / 1024:.0f} MiB)"
    )
    print(
        f"CPU seconds in all: sidecar {report['sidecar_cpu_seconds_total']:.1f}, "
        f"emulator {report['emulator_cpu_seconds_total']:.1f}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark the sidecar against the emulator: throughput, latency, memory."
    )
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL, help="model directory")
    parser.add_argument("--tickets", type=int, default=2000, help="tickets per throughput run")
    parser.add_argument(
        "--rates",
        type=lambda text: [float(x) for x in text.split(",") if x.strip()],
        default=[20.0, 100.0],
        help="arrival rates (tickets/s) for the latency runs, comma-separated",
    )
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="seconds per latency run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per phase (median reported)")
    parser.add_argument("--warmup", type=int, default=100, help="tickets triaged before measuring")
    parser.add_argument("--concurrency", type=int, default=None, help="sidecar worker threads")
    parser.add_argument("--threads", type=int, default=None, help="sidecar inference threads")
    parser.add_argument(
        "--poll-interval", type=float, default=2.0, help="sidecar poll interval, seconds"
    )
    parser.add_argument(
        "--phase-timeout", type=float, default=120.0, help="seconds to wait for one phase"
    )
    parser.add_argument("--max-seconds", type=float, default=900.0, help="bound on the whole run")
    parser.add_argument(
        "--sidecar-source",
        type=Path,
        default=None,
        help="run the sidecar from this source tree (e.g. an export of an earlier commit) "
        "to compare versions against the same emulator",
    )
    parser.add_argument(
        "--emulator-source",
        type=Path,
        default=None,
        help="run the emulator from this source tree (it must serve /_emulator/timings)",
    )
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.model = args.model.resolve()
    for name in ("sidecar_source", "emulator_source"):
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    # A SIGTERM to the benchmark unwinds through the finally blocks that stop both children.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not 1 <= args.tickets <= 100_000 or args.repeat < 1 or args.warmup < 1:
        print("--tickets must be 1..100000, --repeat and --warmup at least 1", file=sys.stderr)
        return 2
    try:
        report = benchmark(args)
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    print_report(report)
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
