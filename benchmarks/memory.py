"""Resident memory of a process and everything it started (Linux /proc), to watch a server's
footprint over a long run: `featurestore serve --workers N` is a parent, N spawned workers and
multiprocessing's helper, and a leak may sit in any of them."""

from __future__ import annotations

import os

PAGE = os.sysconf("SC_PAGE_SIZE")


def descendants(root: int) -> list[int]:
    """`root` and every live process below it, by parent process id."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue.extend(children.get(pid, []))
    return tree


def tree_rss(root: int) -> dict[int, int]:
    """Bytes resident of `root` and of each of its descendants, by process id. Pages shared
    between processes count once per process, as `ps` shows them."""
    resident = {}
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/statm") as statm:
                resident[pid] = int(statm.read().split()[1]) * PAGE
        except OSError:  # exited meanwhile
            continue
    return resident
