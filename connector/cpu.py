"""How many CPUs this process may really use: the default for inference threads.

``os.cpu_count()`` reports the host's cores, which in a container with a CPU
limit oversubscribes the quota: threads get throttled and latency spikes. The
limit is, in order of precedence:

- the CFS quota of the process's cgroup or any ancestor: cgroup v2
  ``cpu.max`` ("<quota> <period>" or "max <period>"), cgroup v1
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1 = none). Rounded down, as a
  partial CPU cannot host a whole busy thread without throttling;
- the CPU affinity mask (``os.sched_getaffinity``: cpusets, ``taskset``);
- ``os.cpu_count()`` where affinity is not available;

and never less than 1.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
# Where distributions mount the v1 cpu controller.
_V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def cpu_limit(*, cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """The number of CPUs this process may use (quota, then affinity), at least 1."""
    available = _affinity_count()
    quota = cgroup_cpu_quota(cgroup_root=cgroup_root, proc_self_cgroup=proc_self_cgroup)
    if quota is not None:
        available = min(available, max(1, math.floor(quota)))
    return max(1, available)


def cgroup_cpu_quota(
    *, cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP
) -> float | None:
    """The tightest CFS quota in CPUs over the process's cgroup and its ancestors, or None."""
    limits = [
        limit
        for directory in _cgroup_dirs(cgroup_root, proc_self_cgroup)
        if (limit := _quota_in(directory)) is not None
    ]
    return min(limits) if limits else None


def _affinity_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _cgroup_dirs(cgroup_root: Path, proc_self_cgroup: Path) -> Iterator[Path]:
    """Candidate directories holding the process's cpu controller files, deepest first."""
    v2_path, v1_path = _own_cgroup_paths(proc_self_cgroup)
    for relative in _with_ancestors(v2_path):
        yield cgroup_root / relative
    for controller in _V1_CPU_DIRS:
        for relative in _with_ancestors(v1_path):
            yield cgroup_root / controller / relative


def _own_cgroup_paths(proc_self_cgroup: Path) -> tuple[str, str]:
    """(v2 path, v1 cpu path) from /proc/self/cgroup; "/" when unknown or namespaced."""
    v2_path = v1_path = "/"
    try:
        content = proc_self_cgroup.read_text(encoding="utf-8")
    except OSError:
        return v2_path, v1_path
    for line in content.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2_path = path or "/"
        elif "cpu" in controllers.split(","):
            v1_path = path or "/"
    return v2_path, v1_path


def _with_ancestors(path: str) -> Iterator[str]:
    """``a/b``, ``a``, then the root (as relative paths); the root alone for "/"."""
    current = PurePosixPath(path)
    while True:
        yield str(current.relative_to("/")) if current.is_absolute() else str(current)
        if current.parent == current:
            return
        current = current.parent


def _quota_in(directory: Path) -> float | None:
    cpu_max = directory / "cpu.max"
    if cpu_max.is_file():
        return _parse_cpu_max(_read(cpu_max))
    quota_file = directory / "cpu.cfs_quota_us"
    period_file = directory / "cpu.cfs_period_us"
    if quota_file.is_file() and period_file.is_file():
        return _ratio(_read(quota_file), _read(period_file))
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _parse_cpu_max(content: str) -> float | None:
    """cgroup v2 ``cpu.max``: "max 100000" (no limit) or "200000 100000" (2 CPUs)."""
    parts = content.split()
    if len(parts) != 2:
        return None
    return _ratio(parts[0], parts[1])


def _ratio(quota: str, period: str) -> float | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max", empty or unreadable
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


__all__ = ["cgroup_cpu_quota", "cpu_limit"]
