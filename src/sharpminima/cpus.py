"""How many CPUs this process may really use: the limit a workflow's jobs must share.

Not the host's count: a process may be held to fewer by its affinity mask (`taskset`, a SLURM
allocation, a container's cpuset) or by a cgroup's CPU quota (`docker --cpus 2`). PyTorch's CPU
kernels slow down far more than in proportion when more threads run than there are CPUs, so the
Snakefile lowers `--cores` to this number and every job caps its `--threads` by it
(docs/workflow.md). Standard library only: the Snakefile reads it before any job runs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def quota_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """The CPUs a cgroup v2 quota allows (rounded up), or None where there is no quota."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs in this process's affinity mask, lowered to its cgroup's quota if it has one."""
    if hasattr(os, "sched_getaffinity"):
        mask = len(os.sched_getaffinity(0))
    else:
        mask = os.cpu_count() or 1
    quota = quota_cpus(cpu_max)
    return mask if quota is None else min(mask, quota)
