"""Small aiohttp apps standing in for each output's server, on 127.0.0.1, that fail then recover.

Each server checks its protocol's authentication, answers ``fail_first`` requests with its
protocol's "busy" answer (or drops them), refuses alerts of the rule ``POISON`` the way the real
server refuses a bad event, and records what it accepted.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

POISON = "00000000-0000-4000-8000-00000000dead"
TOKEN = "s3cr3t-t0ken-value"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class FlakyServer:
    """One protocol's server: `url`, `requests` (count), `accepted` (documents)."""

    def __init__(self, kind: str, fail_first: int = 0, port: int | None = None) -> None:
        self.kind = kind
        self.fail_first = fail_first
        self.port = port or free_port()
        self.requests = 0
        self.unauthorised = 0
        self.accepted: list[dict[str, Any]] = []
        self.stored_ids: set[str] = set()
        self._runner: web.AppRunner | None = None
        handlers: dict[str, tuple[str, Callable[[web.Request], Awaitable[web.Response]]]] = {
            "splunk_hec": ("/services/collector/event", self.hec),
            "elasticsearch": ("/_bulk", self.bulk),
            "webhook": ("/hook", self.webhook),
            "slack": ("/services/T000/B000/XXXX", self.slack),
        }
        self.path, self.handler = handlers[kind]

    @property
    def url(self) -> str:
        base = f"http://127.0.0.1:{self.port}"
        return base if self.kind == "elasticsearch" else base + self.path

    async def start(self) -> FlakyServer:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_post(self.path, self.handler)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _failing(self) -> bool:
        self.requests += 1
        return self.requests <= self.fail_first

    def _authorised(self, request: web.Request, scheme: str) -> bool:
        ok = request.headers.get("Authorization") == f"{scheme} {TOKEN}"
        self.unauthorised += not ok
        return ok

    async def hec(self, request: web.Request) -> web.Response:
        """Splunk HEC: 503 code 9 when busy; 400 code 6 with invalid-event-number."""
        if not self._authorised(request, "Splunk"):
            return web.json_response({"text": "Invalid token", "code": 4}, status=403)
        if self._failing():
            return web.json_response({"text": "Server is busy", "code": 9}, status=503)
        events = [orjson.loads(line) for line in (await request.read()).splitlines() if line]
        for i, env in enumerate(events):
            if env["event"]["signature_id"] == POISON:
                return web.json_response(
                    {"text": "Invalid data format", "code": 6, "invalid-event-number": i},
                    status=400,
                )
            self.accepted.append(env)
        return web.json_response({"text": "Success", "code": 0})

    async def bulk(self, request: web.Request) -> web.Response:
        """Elasticsearch _bulk: whole 503 when failing; per item 201, 409 (same _id), 400."""
        if not self._authorised(request, "ApiKey"):
            return web.json_response({"error": "unauthorised"}, status=401)
        if self._failing():
            return web.json_response({"error": "unavailable"}, status=503)
        lines = (await request.read()).splitlines()
        items = []
        for action_line, doc_line in zip(lines[::2], lines[1::2], strict=True):
            action, doc = orjson.loads(action_line)["create"], orjson.loads(doc_line)
            if doc["rule"]["id"] == POISON:
                error = {"type": "mapper_parsing_exception", "reason": "failed to parse"}
                items.append({"create": {"status": 400, "error": error}})
            elif action["_id"] in self.stored_ids:
                items.append({"create": {"status": 409}})
            else:
                self.stored_ids.add(action["_id"])
                self.accepted.append(doc)
                items.append({"create": {"status": 201, "_id": action["_id"]}})
        errors = any(next(iter(i.values()))["status"] >= 300 for i in items)
        return web.json_response({"took": 1, "errors": errors, "items": items})

    async def webhook(self, request: web.Request) -> web.Response:
        """A generic webhook: 500 when failing, 422 for the poison alert."""
        if not self._authorised(request, "Bearer"):
            return web.Response(status=401)
        if self._failing():
            return web.Response(status=500, text="oops")
        doc = orjson.loads(await request.read())
        rule_id = doc.get("output_fields", {}).get("klaxon.rule.id") or doc.get("rule", {}).get(
            "id"
        )
        if rule_id == POISON:
            return web.Response(status=422, text="unprocessable")
        self.accepted.append(doc)
        return web.Response(text="ok")

    async def slack(self, request: web.Request) -> web.Response:
        """Slack incoming webhook: 429 with Retry-After when failing."""
        if self._failing():
            return web.Response(status=429, text="rate_limited", headers={"Retry-After": "0.05"})
        self.accepted.append(orjson.loads(await request.read()))
        return web.Response(text="ok")


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until true (AssertionError after ``timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)
