"""Group commit: requests that arrive while one batch is being stored go together in the next.

A ``Batcher`` hands its ``run`` function every request waiting (up to ``limit``) and gives each
caller its own result, or its own exception, once ``run`` returns: ``run`` stores the whole batch
in one transaction, so a burst of writes costs one commit instead of one each, and a caller is
answered only after the commit that stored its request. A request alone is stored at once: the
batcher never waits to fill a batch, batches form only while the previous one is being stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


class Batcher(Generic[Request, Result]):
    """``concurrency`` batches may be in flight at once, so that one waiting for the database
    does not hold up the next: ``run`` must keep their order where it matters (the chat locks
    each room, so a later batch waits for an earlier one's commit in that room)."""

    def __init__(
        self,
        run: Callable[[Sequence[Request]], Awaitable[Sequence[Result | BaseException]]],
        *,
        limit: int = 256,
        concurrency: int = 1,
    ) -> None:
        self._run = run
        self.limit = limit
        self.concurrency = concurrency
        self._waiting: list[tuple[Request, asyncio.Future[Result]]] = []
        self._workers: set[asyncio.Task[None]] = set()

    async def submit(self, request: Request) -> Result:
        """Store ``request`` with whatever else is waiting; its result once committed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if len(self._workers) < self.concurrency:
            self._workers.add(asyncio.create_task(self._work(), name="batcher"))
        return await future

    async def _work(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.limit]
                del self._waiting[: self.limit]
                try:
                    results = await self._run([request for request, _future in batch])
                    if len(results) != len(batch):
                        raise RuntimeError("a batch must give one result per request")
                except asyncio.CancelledError:
                    for _request, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:  # each caller gets the failure as its own
                    results = [exc] * len(batch)
                for (_request, future), result in zip(batch, results, strict=True):
                    if future.done():  # its caller went away (a closed connection)
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        except asyncio.CancelledError:
            # Stopped (the server shuts down): whoever still waits must not hang.
            if len(self._workers) <= 1:
                for _request, future in self._waiting:
                    future.cancel()
                self._waiting.clear()
            raise
        finally:
            # At once, not in a callback: a request arriving now must find the worker gone.
            task = asyncio.current_task()
            if task is not None:
                self._workers.discard(task)
