"""Batch allocation on a seeded synthetic instance, against first-come-first-served.

10,000 pending cases over a 4-week horizon (holidays included: it starts on Monday
7 December 2026, so the 8th, 25th and 26th have no slots), 30 conciliators with their own
working days and daily limits, 40 companies with 1-4 seats per slot, random preferences. The
project's allocator (``scheduling.allocation.allocate``, exact min-cost flow) and, on the same
instance, the greedy pass booking tools use: cases in order of filing, each taking the first
free slot and conciliator. Last line: ``RESULT {json}``.

    python -m bench.scheduling [--cases 10000] [--seed 7] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import defaultdict
from datetime import date, timedelta

from scheduling.allocation import (
    Allocation,
    Conciliator,
    PendingCase,
    Placement,
    allocate,
    day_ranks,
    score_of,
)
from scheduling.calendar import Calendar, Slot

START = date(2026, 12, 7)


def instance(
    n_cases: int, seed: int
) -> tuple[list[PendingCase], list[Slot], list[Conciliator], dict[str, int]]:
    rng = random.Random(seed)  # noqa: S311 - a seeded synthetic instance
    slots = Calendar().slots(START, START + timedelta(days=27))
    keys = sorted({s.key for s in slots})
    companies = [f"company-{i:02d}" for i in range(40)]
    capacity = {c: rng.randint(1, 4) for c in companies}
    cases = []
    for i in range(n_cases):
        earliest = START + timedelta(days=rng.randint(0, 10))
        cases.append(
            PendingCase(
                f"case-{i:05d}",
                rng.choice(companies),
                earliest,
                earliest + timedelta(days=rng.randint(5, 30)),
                frozenset(rng.sample(keys, rng.randint(0, 6))),
            )
        )
    conciliators = [
        Conciliator(
            f"conciliator-{i:02d}",
            max_per_day=rng.randint(3, 5),
            working_weekdays=frozenset(rng.sample(range(5), rng.randint(3, 5))),
        )
        for i in range(30)
    ]
    return cases, slots, conciliators, capacity


def greedy(
    cases: list[PendingCase],
    slots: list[Slot],
    conciliators: list[Conciliator],
    capacity: dict[str, int],
) -> list[Placement]:
    """First come, first served: each case in turn takes the first free slot."""
    taken: set[tuple[str, object]] = set()
    per_day: dict[tuple[str, date], int] = defaultdict(int)
    seats: dict[tuple[str, object], int] = defaultdict(int)
    placements = []
    for case in cases:
        for slot in slots:
            if not case.earliest <= slot.day <= case.deadline:
                continue
            if seats[(case.company, slot.starts_at)] >= capacity[case.company]:
                continue
            who = next(
                (
                    k
                    for k in conciliators
                    if k.free_at(slot)
                    and (k.id, slot.starts_at) not in taken
                    and per_day[(k.id, slot.day)] < k.max_per_day
                ),
                None,
            )
            if who is None:
                continue
            taken.add((who.id, slot.starts_at))
            per_day[(who.id, slot.day)] += 1
            seats[(case.company, slot.starts_at)] += 1
            placements.append(Placement(case.id, slot, who.id))
            break
    return placements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cases, slots, conciliators, capacity = instance(args.cases, args.seed)
    print(f"{len(cases)} cases, {len(slots)} slots in 4 weeks, {len(conciliators)} conciliators")
    times = []
    result: Allocation | None = None
    for _ in range(args.repeat):
        started = time.perf_counter()
        result = allocate(cases, slots, conciliators, capacity)
        times.append(time.perf_counter() - started)
    assert result is not None
    started = time.perf_counter()
    fcfs = greedy(cases, slots, conciliators, capacity)
    greedy_s = time.perf_counter() - started
    by_id = {c.id: c for c in cases}
    greedy_score = score_of(fcfs, by_id, conciliators, day_ranks(slots))
    # The greedy's allocation is feasible, so an exact allocator never scores worse.
    optimal = result.score.key() <= greedy_score.key()
    print(f"allocator: {result.score} in {statistics.median(times):.2f} s (median of {len(times)})")
    print(f"greedy:    {greedy_score} in {greedy_s:.2f} s")
    print(
        "RESULT "
        + json.dumps(
            {
                "cases": len(cases),
                "solve_s": round(statistics.median(times), 3),
                "placed": result.score.placed,
                "preferences_met": result.score.preferences_met,
                "greedy_placed": greedy_score.placed,
                "greedy_preferences_met": greedy_score.preferences_met,
                "greedy_s": round(greedy_s, 3),
                "optimal": optimal,
            }
        )
    )


if __name__ == "__main__":
    main()
