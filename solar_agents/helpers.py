"""Helper processes: the steps' computing, beside the worker's event loop.

A worker's event loop is one thread under one lock (the GIL): Faust's runtime, the reads, the sends and the
table writes share one core. The steps' own work needs none of that: the ingest's parse, the align step (its
state is a copy of the tables, loaded again after every rebalance) and the writer each run in a helper process
of their own (``STEP_PROCESSES``), and the agents only hand them bytes and act on the answer. With the setting
off, the parse and the align step run on the event loop and the writer in a thread, as in one process.

A helper is started with the worker and again after it died (its call then fails, and the agent retries it).
It stops with the worker, and on its own once the worker is gone (even after ``kill -9``).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Generic, TypeVar

from solar_agents import log

C = TypeVar("C")  # what a helper holds for its calls: a database connection, the region resolver
R = TypeVar("R")

_log = log.get_logger(__name__)

# What the helper process holds: one context per process, built by ``_start_process``.
_context: Any = None


class Helper(Generic[C]):
    """One helper: ``await helper.run(fn, *args)`` runs ``fn(context, *args)`` there, one call at a time.

    ``make_context(*context_args)`` builds the context once, in the helper (a connection never crosses a
    process boundary). Functions and arguments must be picklable: module-level functions, plain data.
    """

    def __init__(
        self,
        name: str,
        make_context: Callable[..., C],
        context_args: tuple[Any, ...],
        *,
        processes: bool,
        blocking: bool = False,
        log_level: str = "info",
    ) -> None:
        self.name = name
        self.processes = processes
        # Calls that wait on I/O (a database) never run on the event loop: without processes, in a thread.
        self.blocking = blocking
        self.log_level = log_level
        self._make_context = make_context
        self._context_args = context_args
        self._executor: Executor | None = None
        self._context: C | None = None  # the context when calls run in a thread of this process

    def _ensure_started(self) -> Executor:
        if self._executor is None:
            if self.processes:
                # Spawned, not forked: the worker runs threads (the consumer's); a fork copies their locks.
                self._executor = ProcessPoolExecutor(
                    1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_process,
                    initargs=(self.name, self.log_level, os.getpid(), self._make_context, self._context_args),
                )
            else:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        return self._executor

    async def start(self) -> None:
        """Start the helper now rather than on its first call (it takes a second to import)."""
        if self.processes:
            await self.run(_ready)

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        if not self.processes and not self.blocking:
            return self._in_this_process(fn, args)  # CPU only: on the event loop, as any agent's own code
        executor = self._ensure_started()
        loop = asyncio.get_running_loop()
        if not self.processes:
            return await loop.run_in_executor(executor, self._in_this_process, fn, args)
        try:
            with _main_not_imported():  # the executor starts its process, if it must, right in this call
                future = loop.run_in_executor(executor, _in_process, fn, args)
            return await future
        except BrokenProcessPool:
            # Killed, or out of memory: the next call starts a new one (its context is built again).
            _log.warning("helper_died", helper=self.name)
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            raise

    def _in_this_process(self, fn: Callable[..., R], args: tuple[Any, ...]) -> R:
        if self._context is None:
            self._context = self._make_context(*self._context_args)
        return fn(self._context, *args)

    def close(self) -> None:
        """Stop the helper after the calls in progress (blocks: call it from a thread)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


@contextlib.contextmanager
def _main_not_imported() -> Iterator[None]:
    """A spawned process first imports the parent's main script; for ``faust -A solar_agents worker`` that is
    the faust command, all of Faust: a second of start for nothing a helper uses. Modules run with ``-m``
    (``python -m solar_agents``) are imported by name, and are left as they are."""
    main = sys.modules["__main__"]
    path = getattr(main, "__file__", None)
    if path is None or getattr(main.__spec__, "name", None) is not None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def _ready(_context: object) -> None:
    return None


def _in_process(fn: Callable[..., R], args: tuple[Any, ...]) -> R:
    return fn(_context, *args)


def _start_process(
    name: str, level: str, parent: int, make_context: Callable[..., Any], context_args: tuple[Any, ...]
) -> None:
    """The helper process's start: logs as the worker's, its context, and a watch on the worker."""
    global _context
    log.configure(level)
    # Ctrl-C reaches the whole process group: the worker decides when its helpers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _context = make_context(*context_args)
    _log.info("helper_started", helper=name, pid=os.getpid(), worker_pid=parent)
    threading.Thread(target=_exit_with, args=(parent, name), name="watch-worker", daemon=True).start()


def _exit_with(parent: int, name: str) -> None:
    """Exit once the worker is gone: the executor's queue never tells a helper so (it holds both ends)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    _log.warning("helper_orphaned", helper=name, worker_pid=parent)
    os._exit(0)
