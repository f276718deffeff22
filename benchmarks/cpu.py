"""CPU accounting on a small, possibly shared machine: the machine's busy time, the CPU of each
process group a benchmark started, and what everything else used meanwhile (Linux /proc)."""

from __future__ import annotations

import os


def busy_cpu() -> float:
    """CPU seconds the whole machine has been busy (Linux /proc/stat), to price other
    processes' load during a measurement."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def process_cpu(pgid: int) -> dict[int, float]:
    """CPU seconds used so far by each live process of a process group (10 ms ticks)."""
    used = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ...
            used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def groups_process_cpu(pgids: list[int]) -> dict[int, float]:
    """process_cpu of several process groups, by process id."""
    return {pid: cpu for pgid in pgids for pid, cpu in process_cpu(pgid).items()}


def cpu_snapshot(groups: dict[str, int]) -> dict[str, float]:
    """The machine's busy CPU seconds and each named process group's, at this moment."""
    return {"machine": busy_cpu(),
            **{name: sum(process_cpu(pgid).values()) for name, pgid in groups.items()}}


def cpu_delta(before: dict[str, float], after: dict[str, float], own: float,
              own_name: str) -> dict[str, float]:
    """CPU seconds per named process group plus `own` (this process or the client
    processes); `others` is what the rest of the machine used meanwhile."""
    used = {name: after[name] - before[name] for name in before if name != "machine"}
    used[own_name] = own
    machine = after["machine"] - before["machine"]
    return {**{k: round(v, 2) for k, v in used.items()},
            "others": round(max(0.0, machine - sum(used.values())), 2),
            "machine": round(machine, 2)}
