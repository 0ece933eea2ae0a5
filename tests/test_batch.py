"""The group commit's batcher: batches form while others are stored, each caller gets its own
result or its own error, and nobody is left waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from core.batch import Batcher


async def test_requests_waiting_together_go_in_one_batch_each_with_its_own_answer() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def run(batch: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(batch))
        await release.wait()
        return [ValueError(n) if n < 0 else n * 10 for n in batch]

    batcher: Batcher[int, int] = Batcher(run, limit=3)
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0)
    others = [asyncio.ensure_future(batcher.submit(n)) for n in (2, -3, 4, 5)]
    await asyncio.sleep(0)
    assert batches == [[1]]  # stored at once, not held back to fill a batch
    release.set()
    assert await first == 10
    results = await asyncio.gather(*others, return_exceptions=True)
    assert results[0] == 20 and results[2:] == [40, 50]
    assert isinstance(results[1], ValueError)
    assert batches == [[1], [2, -3, 4], [5]]  # at most ``limit`` a batch, in order


async def test_several_batches_in_flight_and_a_failing_batch_fails_only_its_callers() -> None:
    in_flight = 0
    most = 0

    async def run(batch: Sequence[int]) -> list[int | BaseException]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        if 13 in batch:
            raise RuntimeError("the database said no")
        return list(batch)

    batcher: Batcher[int, int] = Batcher(run, limit=2, concurrency=2)
    results = await asyncio.gather(
        *(batcher.submit(n) for n in (1, 2, 13, 4, 5, 6)), return_exceptions=True
    )
    assert most == 2
    assert results[:2] == [1, 2] and results[4:] == [5, 6]
    assert all(isinstance(r, RuntimeError) for r in results[2:4])
    # Later requests start workers again.
    assert await batcher.submit(7) == 7


async def test_a_caller_that_goes_away_does_not_disturb_the_others() -> None:
    release = asyncio.Event()

    async def run(batch: Sequence[int]) -> list[int | BaseException]:
        await release.wait()
        return list(batch)

    batcher: Batcher[int, int] = Batcher(run)
    gone = asyncio.ensure_future(batcher.submit(1))
    kept = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    assert await kept == 2
    with pytest.raises(asyncio.CancelledError):
        await gone
