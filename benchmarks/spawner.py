"""A small process that starts commands for ``benchmarks.compare`` and reports what
``wait4`` says of each: wall time from the fork to the reaping, exit status, peak RSS.

Why a process of its own: a child's peak RSS (``ru_maxrss``) starts at the resident size
of the image it was forked from, since the kernel carries the old image's high-water mark
across ``exec``, so a harness holding hvac, OpenBao's output and its own figures would lend
every child its own size (~50 MiB). This one imports only the standard library and runs
without ``site`` (``python -I -S``), ~10 MiB: that is the floor of every peak it reports,
and the harness measures it (``/bin/true``) to say so.

Protocol, one JSON object per line: in, ``{"argv": [...], "env": {...}, "log": PATH,
"timeout": SECONDS}`` (``argv[0]`` an absolute path; output appended to ``log``); out,
``{"pid": N}`` once the child is forked, then ``{"seconds": S, "status": N,
"max_rss_kib": N, "timed_out": BOOL}`` once it is reaped (status as ``subprocess`` gives
it: negative for a signal). A child that outlives ``timeout`` is killed.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from types import FrameType
from typing import Any


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _run(request: dict[str, Any]) -> None:
    argv = [str(a) for a in request["argv"]]
    env = {str(k): str(v) for k, v in request["env"].items()}
    devnull = os.open(os.devnull, os.O_RDONLY)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: its own standard streams, then the command
        try:
            os.dup2(devnull, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.execve(argv[0], argv, env)  # noqa: S606 (no shell: argv as given)
        finally:
            os._exit(127)
    os.close(devnull)
    os.close(log)
    _reply({"pid": pid})
    timed_out = False

    def expire(signum: int, frame: FrameType | None) -> None:
        nonlocal timed_out
        timed_out = True
        os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(max(1, math.ceil(float(request.get("timeout", 300)))))
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    signal.alarm(0)
    _reply(
        {
            "seconds": seconds,
            "status": os.waitstatus_to_exitcode(status),
            "max_rss_kib": usage.ru_maxrss,
            "timed_out": timed_out,
        }
    )


def main() -> None:
    while line := sys.stdin.readline():
        _run(json.loads(line))


if __name__ == "__main__":
    main()
