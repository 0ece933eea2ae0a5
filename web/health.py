"""The node's watch over its dependencies (PostgreSQL, Redis), which ``/readyz`` reports.

A probe is a real round trip (``SELECT 1``, ``PING``), each bounded by ``PROBE_TIMEOUT``. Its
result is kept ``CACHE_SECONDS``: however often ``/readyz`` is asked, a node probes at most
about once a second, and concurrent askers share one probe. A background loop probes every
``WATCH_SECONDS`` so that the node's log tells when a dependency went down and when it came
back (and after how long), whether anyone asks ``/readyz`` or not. The last outages of each
dependency are kept for ``/readyz`` to show what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from core.outage import DATABASE, REDIS

log = logging.getLogger(__name__)
PROBE_TIMEOUT = 3.0  # seconds one probe may take before the dependency counts as down
CACHE_SECONDS = 1.0
WATCH_SECONDS = 1.0
KEPT_OUTAGES = 5  # per dependency, for /readyz

Probe = Callable[[], Awaitable[Any]]


@dataclass
class Outage:
    dependency: str
    error: str
    started: datetime
    began: float  # monotonic
    ended: datetime | None = None
    seconds: float | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "dependency": self.dependency,
            # The exception's type only: its text may name hosts, ports and the database user,
            # and /readyz is public; the node's log has it in full.
            "error": self.error.partition(":")[0],
            "started": self.started.isoformat(),
            "ended": self.ended.isoformat() if self.ended else None,
            "seconds": round(self.seconds, 1) if self.seconds is not None else None,
        }


class Health:
    """The state of each dependency, probed for real at most every ``CACHE_SECONDS``."""

    def __init__(self, probes: dict[str, Probe]) -> None:
        self._probes = probes
        self._checked_at = float("-inf")
        self._checks: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._down: dict[str, Outage] = {}
        self._past: dict[str, deque[Outage]] = {name: deque(maxlen=KEPT_OUTAGES) for name in probes}

    async def _probe(self, name: str, probe: Probe) -> tuple[str, str | None]:
        try:
            await asyncio.wait_for(probe(), PROBE_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return name, f"{type(exc).__name__}: {str(exc)[:200]}"
        return name, None

    async def check(self) -> dict[str, str]:
        """``dependency → "ok" | "unreachable"``, at most ``CACHE_SECONDS`` old."""
        async with self._lock:
            if time.monotonic() - self._checked_at < CACHE_SECONDS:
                return dict(self._checks)
            results = await asyncio.gather(
                *(self._probe(name, probe) for name, probe in self._probes.items())
            )
            for name, failure in results:
                self._record(name, failure)
            self._checks = {
                name: "ok" if failure is None else "unreachable" for name, failure in results
            }
            self._checked_at = time.monotonic()
            return dict(self._checks)

    def _record(self, name: str, failure: str | None) -> None:
        outage = self._down.get(name)
        if failure is not None and outage is None:
            self._down[name] = Outage(name, failure, datetime.now(UTC), time.monotonic())
            log.warning("%s unreachable (%s): answering 503 unavailable meanwhile", name, failure)
        elif failure is None and outage is not None:
            del self._down[name]
            outage.ended = datetime.now(UTC)
            outage.seconds = time.monotonic() - outage.began
            self._past[name].append(outage)
            log.info("%s is back after %.1f s of outage", name, outage.seconds)

    def report(self) -> dict[str, object]:
        """What ``/readyz`` says besides the checks: what is down since when, and the last
        outages that ended."""
        return {
            "down": {name: o.as_json() for name, o in self._down.items()},
            "outages": [o.as_json() for past in self._past.values() for o in past],
        }

    async def watch(self, stop: asyncio.Event) -> None:
        """Probe until ``stop`` is set, so that the log tells each outage and recovery."""
        while not stop.is_set():
            try:
                await self.check()
            except Exception:
                log.exception("the dependencies' probe failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_SECONDS)


def health_for(db_ping: Probe, redis_ping: Probe | None) -> Health:
    probes: dict[str, Probe] = {DATABASE: db_ping}
    if redis_ping is not None:
        probes[REDIS] = redis_ping
    return Health(probes)


HEALTH = web.AppKey("concilia_health", Health)
