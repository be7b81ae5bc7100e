"""A Ray instance dies with the driver that started it.

When a `training.sweep` driver that started its own Ray instance dies without shutting it down (SIGKILL), Ray
ends its GCS, raylet and workers but leaves its dashboard and runtime-env agents waiting forever for the GCS that
died. `Reaper` starts a watcher process that notes the processes appearing under the driver and, once the pipe
from the driver closes without a word (the driver died), ends them: SIGTERM, then SIGKILL. Linux (/proc);
elsewhere it does nothing.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from pathlib import Path


class Reaper:
    """The watcher process of the Ray instance this driver is about to start (see the module docstring)."""

    def __init__(self):
        import subprocess

        self.proc = None
        if not os.path.isdir("/proc"):
            return
        root = str(Path(__file__).resolve().parents[1])
        code = f"import sys; sys.path.insert(0, {root!r}); from training.reaper import reap; reap()"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     start_new_session=True)  # a Ctrl-C meant for the driver leaves it alone
        self.proc.stdout.readline()  # "ready": it has noted what ran under the driver before Ray started

    def close(self) -> None:
        """The driver shut Ray down itself: the watcher leaves, ending nothing."""
        if self.proc is not None:
            try:
                self.proc.stdin.write(b"done\n")
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.wait()
            self.proc = None


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, start time) of every process, from /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read().decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (command name)"
            table[int(name)] = (int(fields[1]), fields[0], fields[19])
    return table


def _under(root: int, table: dict[int, tuple[int, str, str]]) -> dict[int, str]:
    """The descendants of `root`: pid -> start time (which tells a reused pid apart)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [root]
    while todo:
        for c in children.get(todo.pop(), []):
            found[c] = table[c][2]
            todo.append(c)
    return found


def _alive(seen: dict[int, str]) -> list[int]:
    table = _processes()
    return [p for p, start in seen.items() if p in table and table[p][2] == start and table[p][1] != "Z"]


def reap() -> None:
    """The watcher process of `Reaper` (its parent the driver, its stdin a pipe from it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    driver, me = os.getppid(), os.getpid()
    before = set(_under(driver, _processes()))
    print("ready", flush=True)
    seen: dict[int, str] = {}
    while True:
        if select.select([0], [], [], 1.0)[0]:
            if os.read(0, 64):
                return  # "done": the driver shut Ray down itself
            break  # the pipe closed without a word: the driver died
        seen.update((p, t) for p, t in _under(driver, _processes()).items() if p not in before and p != me)
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 1.0)):
        for pid in _alive(seen):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while _alive(seen) and time.monotonic() < deadline:
            time.sleep(0.1)
