"""Measuring on a shared machine: wait for the CPUs to be quiet, and see who else ran.

A figure taken while other processes used the CPUs measures them as much as
chatlog.  :func:`wait_quiet` waits (up to a minute) for the machine to be
idle before a run; the machine's busy CPU time around a run
(:func:`busy_cpu_s`), less this process's and that of the processes the run
started (:func:`own_cpu_s`, once they are reaped), is what the neighbours
took: a run where they took more than a limit is shown as spoiled and run
again.  Used by ``python -m
chatlog.bench.noisy`` and ``python -m chatlog.client.logcost``.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

#: Busy CPU (cores) below which the machine counts as quiet, and the longest wait for it.
QUIET_CORES = 0.15
QUIET_WAIT_S = 60.0
HZ = os.sysconf("SC_CLK_TCK")


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``: all but idle and iowait)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / HZ


def process_cpu_s(pid: int) -> float:
    """utime + stime of one running process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name come fields 3...: utime is field 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / HZ


def own_cpu_s() -> float:
    """CPU seconds of this process (its own reading of logs, say) and of its reaped children."""
    mine = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def wait_quiet() -> float:
    """Wait for the other processes to leave the CPUs idle; return the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < QUIET_WAIT_S:
        before = busy_cpu_s()
        time.sleep(1.0)
        if busy_cpu_s() - before <= QUIET_CORES:
            break
    return time.monotonic() - started
