"""Helper processes (``helpers``): calls run in another process with their context, a helper killed is
started again by the next call, and a helper whose worker is gone exits by itself."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from solar_agents.runtime.helpers import PIPE_BYTES, Helper, HelperDied


class Counter:
    """A context that remembers its calls: it lives as long as its helper process."""

    def __init__(self, start: int) -> None:
        self.count = start


def bump(counter: Counter, by: int) -> tuple[int, int]:
    counter.count += by
    return os.getpid(), counter.count


def fail(_counter: Counter, message: str) -> None:
    raise ValueError(message)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_calls_run_in_a_helper_process_that_keeps_its_context() -> None:
    async def main() -> None:
        helper = Helper("test", Counter, (10,), processes=True)
        try:
            pid, count = await helper.run(bump, 1)
            assert pid != os.getpid()
            assert count == 11
            assert await helper.run(bump, 5) == (pid, 16)  # the same process, the same context
            with pytest.raises(ValueError, match="bad input"):  # an exception comes back as itself
                await helper.run(fail, "bad input")
            assert await helper.run(bump, 1) == (pid, 17)  # and the helper lives on
        finally:
            await helper.close()
        assert not alive(pid)

    asyncio.run(main())


def echo(_counter: Counter, payload: bytes) -> bytes:
    return payload


def test_the_pipes_hold_a_mib_so_a_large_answer_takes_few_turns_of_the_loop() -> None:
    """A batch's answer is megabytes; read 64 KiB a turn of a busy event loop, the helper waits on it."""
    with open("/proc/sys/fs/pipe-max-size") as limit:
        if int(limit.read()) < PIPE_BYTES:
            pytest.skip("this system caps pipes below PIPE_BYTES")

    async def main() -> None:
        helper = Helper("test", Counter, (0,), processes=True)
        try:
            payload = os.urandom(3 * PIPE_BYTES)
            assert await helper.run(echo, payload) == payload
            process = helper._process
            assert process is not None
            for transport in (process.writer.transport, process.reader._transport):  # type: ignore[attr-defined]
                fd = transport.get_extra_info("pipe").fileno()
                assert fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) == PIPE_BYTES
            assert process.reader._transport.max_size == PIPE_BYTES  # type: ignore[attr-defined]
        finally:
            await helper.close()

    asyncio.run(main())


def test_off_the_calls_run_in_a_thread_of_this_process() -> None:
    async def main() -> None:
        helper = Helper("test", Counter, (0,), processes=False)
        assert await helper.run(bump, 2) == (os.getpid(), 2)
        assert await helper.run(bump, 2) == (os.getpid(), 4)
        await helper.close()

    asyncio.run(main())


def test_a_killed_helper_fails_one_call_and_the_next_starts_a_new_one() -> None:
    async def main() -> None:
        helper = Helper("test", Counter, (0,), processes=True)
        try:
            first, _ = await helper.run(bump, 1)
            os.kill(first, signal.SIGKILL)
            await asyncio.get_running_loop().run_in_executor(None, wait_gone, first)
            with pytest.raises(HelperDied):
                await helper.run(bump, 1)
            second, count = await helper.run(bump, 1)
            assert second != first
            assert count == 1  # a new context, built again in the new process
        finally:
            await helper.close()

    asyncio.run(main())


def test_a_helper_exits_once_its_worker_is_killed() -> None:
    """The worker dies by SIGKILL, with no chance to stop its helper: the helper notices and exits."""
    script = textwrap.dedent(
        """
        import asyncio, sys, time
        from solar_agents.runtime.helpers import PIPE_BYTES, Helper, HelperDied
        from test_helpers import Counter, bump

        async def main():
            helper = Helper("orphan", Counter, (0,), processes=True)
            pid, _ = await helper.run(bump, 1)
            print("pid", pid, flush=True)
            time.sleep(60)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), *sys.path])}
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        while not line.startswith("pid "):  # the helper's own log lines come first
            line = worker.stdout.readline()
        helper_pid = int(line.split()[1])
        assert alive(helper_pid)
        worker.kill()
        worker.wait()
        wait_gone(helper_pid)
        assert not alive(helper_pid), "the helper outlived its worker"
    finally:
        worker.kill()
        worker.wait()
