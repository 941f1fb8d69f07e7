"""Run a function over items, one short-lived process per item, with a time bound each.

Video decoders can hang on truncated files or crash on hostile ones. A process per item
(forked, so it is cheap) lets us kill a hung decode and survive a segfault, turning both
into a per-file failure with a reason instead of a stuck or dead pipeline.
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Failure:
    """Why one item could not be processed."""

    reason: str


def default_workers(requested: int | None) -> int:
    return requested or max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def _context() -> mp.context.BaseContext:
    # fork is cheap and needs nothing picklable; elsewhere (macOS, Windows) spawn is the safe default.
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _child(fn: Callable[[Any], Any], item: Any, conn: Connection, quiet: bool) -> None:
    if quiet:
        # FFmpeg/decord write straight to fd 2; the reason we report comes from the exception,
        # and a crash is reported by the parent from the exit signal, not by a traceback dump.
        faulthandler.disable()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    try:
        result = ("ok", fn(item))
    except BaseException as exc:  # noqa: BLE001 - everything becomes a per-item failure
        result = ("err", f"{exc}" if str(exc) else type(exc).__name__)
    try:
        conn.send(result)
    finally:
        conn.close()


@dataclass
class _Running:
    item: Any
    proc: mp.process.BaseProcess
    conn: Connection
    deadline: float


def run_isolated(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int | None = None,
    timeout_s: float = 60.0,
    desc: str = "",
    progress: bool = True,
    quiet: bool = True,
) -> Iterator[tuple[T, R | Failure]]:
    """Yield ``(item, fn(item))`` or ``(item, Failure)`` as items finish (not in input order)."""
    if mp.current_process().daemon:
        # multiprocessing refuses children here with a bare AssertionError; say which setting to change
        raise RuntimeError(
            f"cannot start a process per item in daemonic process {mp.current_process().name!r} "
            "(a Dask worker under its nanny is one): start the workers with "
            "DASK_DISTRIBUTED__WORKER__DAEMON=False in their environment, or with `dask worker --no-nanny`"
        )
    pending = list(items)
    pending.reverse()  # pop() from the end keeps input order for starting
    ctx = _context()
    n_workers = default_workers(workers)
    running: list[_Running] = []
    bar = tqdm(total=len(pending), desc=desc, unit="file", disable=not progress, dynamic_ncols=True)
    try:
        while pending or running:
            while pending and len(running) < n_workers:
                item = pending.pop()
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(fn, item, send, quiet), daemon=True)
                proc.start()
                send.close()
                running.append(_Running(item, proc, recv, time.monotonic() + timeout_s))
            ready = set(wait([r.conn for r in running], timeout=0.1))
            now = time.monotonic()
            still: list[_Running] = []
            for r in running:
                outcome: Any = None
                if r.conn in ready:
                    try:
                        status, value = r.conn.recv()
                        outcome = value if status == "ok" else Failure(value)
                    except EOFError:
                        r.proc.join(5)
                        code = r.proc.exitcode
                        why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                        outcome = Failure(f"decoder process crashed ({why})")
                elif now > r.deadline:
                    r.proc.kill()
                    outcome = Failure(f"timed out after {timeout_s:g}s (decoder hung: truncated or corrupt file?)")
                if outcome is None:
                    still.append(r)
                    continue
                r.conn.close()
                r.proc.join(5)
                bar.update(1)
                yield r.item, outcome
            running = still
    finally:
        for r in running:
            r.proc.kill()
            r.proc.join(1)
        bar.close()


def run_one_isolated(fn: Callable[[T], R], item: T, timeout_s: float) -> R | Failure:
    """``fn(item)`` in its own time-bounded process (for callers that parallelise themselves)."""
    for _, result in run_isolated(fn, [item], workers=1, timeout_s=timeout_s, progress=False):
        return result
    raise RuntimeError("unreachable: run_isolated yields one result per item")
