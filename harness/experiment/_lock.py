"""One `realign run` per output directory: an fcntl lock on ``<output_dir>/.run.lock`` holding the PID.

The lock is advisory and held (``flock``) for the whole run; the kernel drops it when the process
dies, so a SIGKILLed run never leaves a stale lock behind. The PID written into the file is only
for the error message a second run prints.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from harness.core.errors import ConfigError
from harness.core.process import process_alive, process_identity

__all__ = ["LOCK_NAME", "RunInProgressError", "RunLock", "process_alive", "process_identity"]

LOCK_NAME = ".run.lock"


class RunInProgressError(ConfigError):
    """Another `realign run` holds the output directory's lock."""


class RunLock:
    """``with RunLock(output_dir):`` — raises RunInProgressError if another process holds it."""

    def __init__(
        self, directory: Path, name: str = LOCK_NAME, what: str = "output_dir", target: Path | None = None
    ) -> None:
        self.path = directory / name
        self.what = what  # named in the error: "output_dir X" or "store X"
        self.target = target or directory
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunInProgressError(
                f"{self.what} {self.target}: run in progress (PID {holder}, lock {self.path}); "
                f"wait for it to finish or stop it, or give this run another {self.what}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
