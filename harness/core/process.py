"""Who is running: a process identity a run records, and whether that process still exists."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot, /proc/PID/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def process_identity() -> dict[str, object]:
    """What a run records so `realign status` can later tell whether its process is still alive."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "pid_start": process_start_time(pid)}


def process_alive(identity: dict[str, object]) -> bool | None:
    """True/False when ``identity`` (from :func:`process_identity`) is on this host; None when unknowable."""
    pid, host = identity.get("pid"), identity.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    started = identity.get("pid_start")
    return started is None or process_start_time(pid) == started  # a reused PID is not our run
