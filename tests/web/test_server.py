"""The web server around the views, on a real aiohttp server in this process: the bound on requests in
progress, and JSON errors for what aiohttp refuses before any view."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import ClientSession, web
from http_util import bad_requests

from solar_agents.cli.demo.services import free_port
from solar_agents.web.server import Gate, install_json_errors


async def _serve(
    gate: Gate, release: asyncio.Event, full: asyncio.Event | None = None
) -> tuple[web.AppRunner, int]:
    async def slow(request: web.Request) -> web.StreamResponse:
        if full is not None and gate.active >= gate.limit:
            full.set()
        await release.wait()
        return web.json_response({"ok": True})

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"live": True})

    app = web.Application(middlewares=[gate.middleware()])
    app.router.add_get("/slow", slow)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def test_requests_past_the_bound_get_a_503_at_once_and_health_is_never_refused() -> None:
    async def scenario() -> dict[str, Any]:
        gate = Gate(limit=3)
        release, full = asyncio.Event(), asyncio.Event()
        runner, port = await _serve(gate, release, full)
        base = f"http://127.0.0.1:{port}"
        try:
            async with ClientSession() as session:

                async def get(path: str) -> tuple[int, Any, float]:
                    started = time.monotonic()
                    async with session.get(base + path) as response:
                        return response.status, await response.json(), time.monotonic() - started

                held = [asyncio.create_task(get("/slow")) for _ in range(3)]
                await full.wait()
                refused = await asyncio.gather(*(get("/slow") for _ in range(20)))
                health = await get("/healthz")
                release.set()
                served = await asyncio.gather(*held)
                after = await get("/slow")
        finally:
            await runner.cleanup()
        return {"refused": refused, "health": health, "served": served, "after": after, "gate": gate}

    result = asyncio.run(scenario())
    assert [status for status, _, _ in result["served"]] == [200, 200, 200]
    for status, body, seconds in result["refused"]:
        assert status == 503 and "busy" in body["error"] and seconds < 1.0, (status, body, seconds)
    assert result["health"][0] == 200  # the health endpoints pass the bound
    assert result["after"][0] == 200 and result["gate"].active == 0 and result["gate"].refused == 20


def test_what_aiohttp_rejects_before_routing_is_a_json_error() -> None:
    install_json_errors()

    async def scenario() -> list[tuple[str, int, dict[str, str], bytes]]:
        runner, port = await _serve(Gate(limit=8), asyncio.Event())
        try:
            return await asyncio.get_running_loop().run_in_executor(None, bad_requests, port)
        finally:
            await runner.cleanup()

    for name, status, headers, body in asyncio.run(scenario()):
        assert status == (404 if name == "unknown path" else 400), (name, status, body[:200])
        assert headers["content-type"].startswith("application/json"), (name, headers)
        error = json.loads(body)["error"]
        assert error and b"aaaa" not in body and b"\x00" not in body, (name, error)
