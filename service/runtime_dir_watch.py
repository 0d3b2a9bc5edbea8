"""Whether the shared RUNTIME_DIR is still a folder, logged once when that stops and once when it resumes.

Every worker's poller reads ``$RUNTIME_DIR/control.json`` every ~0.25 s (``service/control.py``). When
the folder is replaced by a file, or removed (a tmp cleaner, a wrong volume mount, an operator), each
read fails the same way, and logging each failure wrote four identical errors a second per worker,
burying everything else. This is a known condition with a known consequence, so it gets one clear line
when it starts and one when it ends, without a traceback; meanwhile the worker keeps the admin state it
last read (rather than treating the missing file as "nothing unloaded" and quietly serving models an
admin had unloaded).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("service.control")

__all__ = ["RuntimeDirWatch", "runtime_dir_problem"]


def runtime_dir_problem(folder: Path) -> str | None:
    """What is wrong with ``folder`` as the shared runtime folder ("is missing", "is a regular file"...),
    or None when it is a folder."""
    try:
        mode = os.stat(folder).st_mode
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be examined ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return None
    kind = "a regular file" if stat.S_ISREG(mode) else "not a folder"
    return f"is {kind}"


class RuntimeDirWatch:
    """Remembers whether the runtime folder was broken at the last look, so each change is logged once."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.problem: str | None = None

    def ok(self) -> bool:
        """True when the folder is usable; logs when its condition changed since the last call."""
        problem = runtime_dir_problem(self.folder)
        if problem != self.problem:
            if problem is not None:
                log.error(
                    "RUNTIME_DIR %s %s: the workers cannot share admin state (load/unload) through it; "
                    "this worker keeps the state it last read until the folder is back",
                    self.folder, problem,
                )
            else:
                log.warning("RUNTIME_DIR %s is a folder again: following the shared admin state", self.folder)
            self.problem = problem
        return problem is None
