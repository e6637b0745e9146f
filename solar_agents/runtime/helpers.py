"""Helper processes: the steps' computing, beside the worker's event loop.

A worker's event loop is one thread under one lock (the GIL): Faust's runtime, the reads, the sends and the
table writes share one core. The steps' own work needs none of that: the ingest's parse, the align step (its
state is a copy of the tables, loaded again after every rebalance) and the writer each run in a helper process
of their own (``STEP_PROCESSES``), and the agents only hand them bytes and act on the answer. With the setting
off, the parse and the align step run on the event loop and the writer in a thread, as in one process.

The event loop talks to a helper over two pipes, without threads of its own: a pool executor would add two
threads per helper to the worker (one pickling the calls, one reading the answers), and every batch's
hand-over between them and the loop was a wait for the GIL (a tenth of the worker's samples).

A helper is started with the worker and again after it died (its call then fails, and the agent retries it).
It stops with the worker, and on its own once the worker is gone (even after ``kill -9``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import multiprocessing
import os
import pickle
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from solar_agents.observe import log

C = TypeVar("C")  # what a helper holds for its calls: a database connection, the region resolver
R = TypeVar("R")

if TYPE_CHECKING:
    from solar_agents.settings import Settings

_log = log.get_logger(__name__)

# How long a helper may take to finish its call and exit once the worker closed its pipe.
CLOSE_SECONDS = 5.0
# The pipes' buffers (Linux's default is 64 KiB). An answer of several MB (a batch's rows) is read a buffer
# per turn of the event loop: with the web view busy, each turn takes longer, and the helper waits for the
# worker to read on (docs/DESIGN.md, "The web view beside the agents").
PIPE_BYTES = 1 << 20


def step_helper(
    name: str, make_context: Callable[..., C], context_args: tuple[Any, ...], settings: Settings, **kw: bool
) -> Helper[C]:
    """A step's helper as the settings say: in a process of its own (``STEP_PROCESSES``) or not."""
    return Helper(
        name,
        make_context,
        context_args,
        processes=settings.step_processes,
        log_level=settings.log_level,
        **kw,
    )


class HelperDied(RuntimeError):
    """The helper process ended during a call (killed, out of memory): the next call starts a new one."""


class HelperClosed(RuntimeError):
    """The worker is stopping and closed its helpers: no call starts one again."""


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
        self._process: _Process | None = None
        self._lock: asyncio.Lock | None = None  # one call at a time: the pipes carry one answer each
        self._thread: ThreadPoolExecutor | None = None
        self._context: C | None = None  # the context when calls run in this process
        self._closed = False

    async def start(self) -> None:
        """Start the helper now rather than on its first call (it takes a second to import)."""
        if self.processes:
            await self.run(_ready)

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        if self._closed:
            raise HelperClosed(f"helper {self.name} is closed: the worker is stopping")
        if not self.processes:
            if not self.blocking:
                return self._in_this_process(fn, args)  # CPU only: on the event loop, as any agent's code
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix=self.name)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, self._in_this_process, fn, args)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._process is None:
                if self._closed:
                    raise HelperClosed(f"helper {self.name} is closed: the worker is stopping")
                self._process = await _Process.start(
                    self.name, self.log_level, self._make_context, self._context_args
                )
            process = self._process
            try:
                return cast(R, await process.call(fn, args))
            except HelperDied:
                self._process = None
                await process.close()
                _log.warning("helper_died", helper=self.name, exit_code=process.process.exitcode)
                raise
            except asyncio.CancelledError:
                # Its answer would come to the next call: this process is done with.
                self._process = None
                process.kill()
                raise

    def _in_this_process(self, fn: Callable[..., R], args: tuple[Any, ...]) -> R:
        if self._context is None:
            self._context = self._make_context(*self._context_args)
        return fn(self._context, *args)

    async def close(self) -> None:
        """Stop the helper after the call in progress; no later call starts it again."""
        self._closed = True
        if self._thread is not None:
            thread, self._thread = self._thread, None
            await asyncio.get_running_loop().run_in_executor(None, thread.shutdown)  # after its call
        if self._lock is None:
            return
        async with self._lock:
            if self._process is not None:
                process, self._process = self._process, None
                await process.close()


class _Process:
    """A spawned helper process and its two pipes, read and written by the event loop."""

    def __init__(
        self, process: BaseProcess, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer

    @classmethod
    async def start(
        cls, name: str, level: str, make_context: Callable[..., Any], context_args: tuple[Any, ...]
    ) -> _Process:
        # Spawned, not forked: the worker runs threads (the consumer's); a fork copies their locks.
        spawn = multiprocessing.get_context("spawn")
        calls_out, calls_in = spawn.Pipe(duplex=False)  # (receiving end, sending end)
        answers_out, answers_in = spawn.Pipe(duplex=False)
        process = spawn.Process(
            target=_serve,
            args=(calls_out, answers_in, name, level, os.getpid(), make_context, context_args),
            name=f"helper-{name}",
        )
        with _main_not_imported():
            process.start()
        calls_out.close()  # the child's ends: its death is then an end of file here
        answers_in.close()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**31)
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(_own_fd(answers_out), "rb", buffering=0)
        )
        if hasattr(read_transport, "max_size"):  # asyncio reads at most 256 KiB a turn of the loop
            read_transport.max_size = PIPE_BYTES
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(_own_fd(calls_in), "wb", buffering=0)
        )
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        return cls(process, reader, writer)

    async def call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        try:
            self.writer.write(_frame(pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)))
            await self.writer.drain()
            (size,) = struct.unpack("!i", await self.reader.readexactly(4))
            if size == -1:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            ok, value = pickle.loads(await self.reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as exc:
            raise HelperDied(f"helper process {self.process.pid} ended") from exc
        if not ok:
            raise value
        return value

    def kill(self) -> None:
        self.writer.close()
        if self.process.is_alive():
            with contextlib.suppress(OSError):
                os.kill(cast(int, self.process.pid), signal.SIGKILL)

    async def close(self) -> None:
        """An end of file on its pipe: the helper returns from its loop and exits (killed if it does not)."""
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        sentinel = self.process.sentinel  # readable once the process has ended

        def on_end() -> None:
            if not ended.done():
                ended.set_result(None)

        loop.add_reader(sentinel, on_end)
        try:
            await asyncio.wait_for(ended, CLOSE_SECONDS)
        except TimeoutError:
            self.kill()
        finally:
            loop.remove_reader(sentinel)
        self.process.join(1.0)


def _own_fd(connection: Connection) -> int:
    """The pipe of ``connection`` as a plain file descriptor of our own (the connection is closed), its
    buffer raised to ``PIPE_BYTES`` where the system allows."""
    fd = os.dup(connection.fileno())
    connection.close()
    with contextlib.suppress(OSError, AttributeError):  # a limit below it, or not Linux: the default
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return fd


def _frame(payload: bytes) -> bytes:
    """``payload`` framed as ``Connection.send_bytes`` frames it: the helper reads with ``recv_bytes``."""
    if len(payload) > 0x7FFFFFFF:
        return struct.pack("!iQ", -1, len(payload)) + payload
    return struct.pack("!i", len(payload)) + payload


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


def _serve(
    calls: Connection,
    answers: Connection,
    name: str,
    level: str,
    parent: int,
    make_context: Callable[..., Any],
    context_args: tuple[Any, ...],
) -> None:
    """The helper process: logs as the worker's, builds its context, then answers calls until the worker
    closes the pipe (or is gone)."""
    log.configure(level)
    # Ctrl-C reaches the whole process group: the worker decides when its helpers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    context = make_context(*context_args)
    _log.info("helper_started", helper=name, pid=os.getpid(), worker_pid=parent)
    threading.Thread(target=_exit_with, args=(parent, name), name="watch-worker", daemon=True).start()
    while True:
        try:
            fn, args = pickle.loads(calls.recv_bytes())
        except EOFError:
            return  # the worker closed its end: stop
        try:
            answer = pickle.dumps((True, fn(context, *args)), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # the call's own failure: it goes back to the caller
            answer = _pickled_failure(exc)
        answers.send_bytes(answer)


def _pickled_failure(exc: Exception) -> bytes:
    try:
        return pickle.dumps((False, exc), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an exception that does not pickle: its type and text
        return pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")))


def _exit_with(parent: int, name: str) -> None:
    """Exit once the worker is gone, even when it could not close the pipe (killed with SIGKILL)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    _log.warning("helper_orphaned", helper=name, worker_pid=parent)
    os._exit(0)
