"""Batch allocation of pending cases to slots and conciliators, exact, as a min-cost flow.

The network, one unit of flow per placed case::

    source → case → (company, slot) → slot → (conciliator, slot) → (conciliator, day)
           → conciliator → sink

- case → (company, slot): one arc for each slot the case may use (from its earliest date to its
  deadline); its cost says whether the slot is one the party asked for and how early it is;
- (company, slot) → slot: the company's free seats in that slot (parallel meetings it can
  attend);
- slot → (conciliator, slot): capacity 1 when the conciliator works that day, is not absent and
  is not already booked then (one meeting per slot);
- (conciliator, day) → conciliator: the meetings per day still allowed;
- conciliator → sink: parallel unit arcs of cost ``k`` for the conciliator's ``k``-th meeting of
  the horizon (counting those already booked), a convex cost that spreads the load evenly.

The objective is lexicographic, in this order: the number of cases placed (before their
deadlines: later slots are not offered), the parties' preferences met, earliness, even load.
The first is a maximum flow; the rest is a min-cost flow of exactly that value, with weights
computed from the instance so that no amount of a lower criterion can outweigh one unit of a
higher one. Integral capacities give an integral optimum: this is exact, not a greedy pass.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

import numpy as np
from ortools.graph.python import max_flow, min_cost_flow

from scheduling.calendar import Slot


class Unplaced(StrEnum):
    NO_SLOT_BEFORE_DEADLINE = "no_slot_before_deadline"  # nothing between earliest and deadline
    NO_CAPACITY = "no_capacity"  # slots exist, but conciliators or the company are taken


@dataclass(frozen=True)
class PendingCase:
    id: str
    company: str
    earliest: date  # after the minimum notice
    deadline: date  # the last day the meeting may take place
    preferences: frozenset[str] = frozenset()  # slot keys such as "mon-09:00"


@dataclass(frozen=True)
class Conciliator:
    id: str
    max_per_day: int = 4
    working_weekdays: frozenset[int] = frozenset(range(5))  # 0 = Monday
    absences: frozenset[date] = frozenset()
    busy: frozenset[datetime] = frozenset()  # starts (UTC) of meetings already booked
    booked_per_day: Mapping[date, int] = field(default_factory=dict)
    booked_total: int = 0

    def free_at(self, slot: Slot) -> bool:
        return (
            slot.day.weekday() in self.working_weekdays
            and slot.day not in self.absences
            and slot.starts_at not in self.busy
        )


@dataclass(frozen=True)
class Placement:
    case_id: str
    slot: Slot
    conciliator_id: str


@dataclass(frozen=True)
class Score:
    """The criteria in their order of importance (compare as a tuple)."""

    placed: int
    preferences_met: int
    earliness: int  # sum over placed cases of the working-day index of their slot (lower first)
    load: int  # sum over conciliators of 1 + 2 + … + meetings (lower is more even)

    def key(self) -> tuple[int, int, int, int]:
        return (-self.placed, -self.preferences_met, self.earliness, self.load)


@dataclass(frozen=True)
class Allocation:
    placements: list[Placement]
    unplaced: dict[str, Unplaced]
    score: Score


def day_ranks(slots: Sequence[Slot]) -> dict[date, int]:
    return {day: rank for rank, day in enumerate(sorted({s.day for s in slots}))}


def score_of(
    placements: Iterable[Placement],
    cases: Mapping[str, PendingCase],
    conciliators: Sequence[Conciliator],
    ranks: Mapping[date, int],
) -> Score:
    """The score of any allocation (used for the solver's and for an independent check)."""
    placed = prefs = early = 0
    counts = {c.id: c.booked_total for c in conciliators}
    base = sum(n * (n + 1) // 2 for n in counts.values())
    for p in placements:
        placed += 1
        prefs += p.slot.key in cases[p.case_id].preferences
        early += ranks[p.slot.day]
        counts[p.conciliator_id] += 1
    load = sum(n * (n + 1) // 2 for n in counts.values()) - base
    return Score(placed, prefs, early, load)


class _Arcs:
    """Arcs collected as numpy blocks (the case arcs alone can number millions)."""

    def __init__(self) -> None:
        self.blocks: list[tuple[np.ndarray, ...]] = []
        self.count = 0

    def add(
        self,
        tails: np.ndarray,
        heads: np.ndarray,
        caps: np.ndarray | int,
        costs: np.ndarray | int = 0,
    ) -> int:
        """Add arcs; returns the index of the first."""
        n = len(tails)
        first = self.count
        self.blocks.append(
            (
                tails.astype(np.int32),
                heads.astype(np.int32),
                np.broadcast_to(np.asarray(caps, dtype=np.int64), (n,)),
                np.broadcast_to(np.asarray(costs, dtype=np.int64), (n,)),
            )
        )
        self.count += n
        return first

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        t, h, c, k = zip(*self.blocks, strict=True)
        return np.concatenate(t), np.concatenate(h), np.concatenate(c), np.concatenate(k)


def allocate(
    cases: Sequence[PendingCase],
    slots: Sequence[Slot],
    conciliators: Sequence[Conciliator],
    company_capacity: Mapping[str, int],
    company_used: Mapping[tuple[str, datetime], int] | None = None,
    *,
    default_capacity: int = 1,
) -> Allocation:
    """The optimal allocation of ``cases`` over ``slots`` (the horizon, holidays excluded)."""
    used = company_used or {}
    slots = sorted(slots)
    ranks = day_ranks(slots)
    by_id = {c.id: c for c in cases}
    n_slots = len(slots)
    slot_days = [s.day for s in slots]
    keys = sorted({s.key for s in slots})
    key_index = {k: i for i, k in enumerate(keys)}
    slot_key = np.array([key_index[s.key] for s in slots], dtype=np.int64)
    slot_rank = np.array([ranks[s.day] for s in slots], dtype=np.int64)
    companies = sorted({c.company for c in cases})
    company_index = {c: i for i, c in enumerate(companies)}
    days = sorted(ranks)

    # Node numbers, block by block.
    source, sink = 0, 1
    case0 = 2
    company0 = case0 + len(cases)
    slot0 = company0 + len(companies) * n_slots
    cslot0 = slot0 + n_slots
    day0 = cslot0 + len(conciliators) * n_slots
    total0 = day0 + len(conciliators) * len(days)

    unplaced: dict[str, Unplaced] = {}
    arcs = _Arcs()
    # source → case, case → (company, slot): the slots between earliest and deadline.
    case_rows: list[int] = []
    case_tails: list[np.ndarray] = []
    case_heads: list[np.ndarray] = []
    case_costs: list[np.ndarray] = []
    offsets = [0]
    for row, case in enumerate(cases):
        lo = bisect_left(slot_days, case.earliest)
        hi = bisect_right(slot_days, case.deadline)
        if lo >= hi:
            unplaced[case.id] = Unplaced.NO_SLOT_BEFORE_DEADLINE
            continue
        span = np.arange(lo, hi)
        wanted = np.zeros(len(keys), dtype=np.int64)
        for key in case.preferences:
            if key in key_index:
                wanted[key_index[key]] = 1
        case_rows.append(row)
        case_tails.append(np.full(hi - lo, case0 + row))
        case_heads.append(company0 + company_index[case.company] * n_slots + span)
        # Cost: 1 for a slot the party did not ask for (scaled below), and its day's rank.
        case_costs.append(np.stack([1 - wanted[slot_key[span]], slot_rank[span]]))
        offsets.append(offsets[-1] + hi - lo)
    if not case_rows:
        return Allocation([], unplaced, Score(0, 0, 0, 0))
    rows = np.array(case_rows)
    arcs.add(np.zeros(len(rows), dtype=np.int64) + source, case0 + rows, 1)
    heads_all = np.concatenate(case_heads)
    cost_parts = np.concatenate(case_costs, axis=1)
    case_first = arcs.add(np.concatenate(case_tails), heads_all, 1, 0)
    # (company, slot) → slot: the company's free seats.
    seat_tails, seat_heads, seat_caps = [], [], []
    for company, ci in company_index.items():
        for si, slot in enumerate(slots):
            seats = company_capacity.get(company, default_capacity) - used.get(
                (company, slot.starts_at), 0
            )
            if seats > 0:
                seat_tails.append(company0 + ci * n_slots + si)
                seat_heads.append(slot0 + si)
                seat_caps.append(seats)
    if seat_tails:
        arcs.add(np.array(seat_tails), np.array(seat_heads), np.array(seat_caps))
    # slot → (conciliator, slot) → (conciliator, day) → conciliator → sink.
    day_index = {d: i for i, d in enumerate(days)}
    loads: list[tuple[int, int]] = []  # (conciliator row, meetings offered)
    cs_tails, cs_heads, cd_tails, cd_heads = [], [], [], []
    room_tails, room_heads, room_caps = [], [], []
    load_bound = 0
    for ki, conciliator in enumerate(conciliators):
        offered = 0
        per_day: dict[date, int] = defaultdict(int)
        for si, slot in enumerate(slots):
            if not conciliator.free_at(slot):
                continue
            if conciliator.max_per_day - conciliator.booked_per_day.get(slot.day, 0) <= 0:
                continue
            cs_tails.append(slot0 + si)
            cs_heads.append(cslot0 + ki * n_slots + si)
            cd_tails.append(cslot0 + ki * n_slots + si)
            cd_heads.append(day0 + ki * len(days) + day_index[slot.day])
            per_day[slot.day] += 1
        for day, count in per_day.items():
            room = conciliator.max_per_day - conciliator.booked_per_day.get(day, 0)
            room_tails.append(day0 + ki * len(days) + day_index[day])
            room_heads.append(total0 + ki)
            room_caps.append(room)
            offered += min(room, count)
        loads.append((ki, offered))
        n = conciliator.booked_total + offered
        load_bound += n * (n + 1) // 2
    conciliator_first = arcs.count
    if cs_tails:
        arcs.add(np.array(cs_tails), np.array(cs_heads), 1)
        arcs.add(np.array(cd_tails), np.array(cd_heads), 1)
        arcs.add(np.array(room_tails), np.array(room_heads), np.array(room_caps))
    # The k-th meeting of a conciliator costs k: convex, so the load spreads evenly.
    unit_tails: list[int] = []
    unit_costs: list[int] = []
    for ki, offered in loads:
        base = conciliators[ki].booked_total
        unit_tails.extend([total0 + ki] * offered)
        unit_costs.extend(range(base + 1, base + offered + 1))
    if unit_tails:
        arcs.add(np.array(unit_tails), np.full(len(unit_tails), sink), 1, np.array(unit_costs))
    tails, heads, caps, costs = arcs.arrays()

    # 1. The most cases that can be placed.
    flow = max_flow.SimpleMaxFlow()
    flow.add_arcs_with_capacity(tails, heads, caps)
    if flow.solve(source, sink) != flow.OPTIMAL:
        raise RuntimeError("max flow failed")
    placed = int(flow.optimal_flow())
    # 2. Among allocations placing that many: preferences, then earliness, then even load.
    w_early = load_bound + 1  # one day earlier outweighs any change of load
    w_pref = w_early * (placed * (max(ranks.values(), default=0) + 1) + 1)
    costs = costs.copy()
    costs[case_first : case_first + len(heads_all)] = (
        w_pref * cost_parts[0] + w_early * cost_parts[1]
    )
    solver = min_cost_flow.SimpleMinCostFlow()
    solver.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
    solver.set_node_supply(source, placed)
    solver.set_node_supply(sink, -placed)
    status = solver.solve()
    if status != solver.OPTIMAL:
        raise RuntimeError(f"min cost flow failed: {status}")
    flows = solver.flows(np.arange(len(tails), dtype=np.int32))
    # Which conciliators took each slot, then which cases went to each slot.
    takers: dict[int, list[str]] = defaultdict(list)
    n_cs = len(cs_tails)
    for i in np.nonzero(flows[conciliator_first : conciliator_first + n_cs])[0]:
        arc_index = conciliator_first + int(i)
        si = int(heads[arc_index]) - cslot0
        ki, si = divmod(si, n_slots)
        takers[si].append(conciliators[ki].id)
    placements: list[Placement] = []
    chosen = np.nonzero(flows[case_first : case_first + len(heads_all)])[0]
    positions = np.searchsorted(np.array(offsets), chosen, side="right") - 1
    for arc_offset, position in zip(chosen, positions, strict=True):
        case = cases[case_rows[int(position)]]
        si = (int(heads_all[int(arc_offset)]) - company0) % n_slots
        placements.append(Placement(case.id, slots[si], takers[si].pop()))
    done = {p.case_id for p in placements}
    for case in cases:
        if case.id not in done and case.id not in unplaced:
            unplaced[case.id] = Unplaced.NO_CAPACITY
    placements.sort(key=lambda p: (p.slot.starts_at, p.case_id))
    return Allocation(placements, unplaced, score_of(placements, by_id, conciliators, ranks))
