"""Who hears and sees whom: a pure function of the meeting room's state.

The room layer owns the facts (who is admitted and on which side, whether a separate session
is running and with which party, whom the conciliator muted); each participant owns whether
their own camera and microphone are on. ``Routing`` turns those facts into the one question
the forwarder asks per stream: may ``source``'s ``kind`` reach ``target``?
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from rooms.models import Side

Kind = Literal["audio", "video"]
KINDS: tuple[Kind, ...] = ("audio", "video")

# Slots are given in this order, so the conciliator comes first on every screen.
_SIDE_ORDER = {Side.CONCILIATOR: 0, Side.APPLICANT: 1, Side.COMPANY: 2}


def may_meet(a: Side, b: Side, separate: Side | None) -> bool:
    """Whether members of sides ``a`` and ``b`` may hear and see each other.

    In the joint session everyone meets everyone. In a separate session with one party, the
    conciliator and that party meet, the other party meets only its own side: nothing passes
    between the separate session and the party left outside it.
    """
    if separate is None or a == b:
        return True
    inside = (Side.CONCILIATOR, separate)
    return a in inside and b in inside


@dataclass(frozen=True)
class Routing:
    """The facts the forwarder obeys; build a new one for every change (it is immutable).

    ``members`` are the admitted participants and their sides: anyone else receives nothing
    and reaches no one. ``separate`` is the party of the running separate session, ``None``
    for the joint session. ``muted`` are participants whose audio the conciliator cut.
    ``off`` are the kinds each participant turned off themselves (camera, microphone).
    """

    members: Mapping[str, Side] = field(default_factory=dict)
    separate: Side | None = None
    muted: frozenset[str] = frozenset()
    off: Mapping[str, frozenset[Kind]] = field(default_factory=dict)

    def meets(self, source: str, target: str) -> bool:
        """Whether ``target`` may hear or see ``source`` at all (mute and camera aside)."""
        if source == target:
            return False
        a = self.members.get(source)
        b = self.members.get(target)
        if a is None or b is None:
            return False
        return may_meet(a, b, self.separate)

    def forwards(self, source: str, target: str, kind: Kind) -> bool:
        """Whether ``source``'s ``kind`` reaches ``target`` now."""
        if not self.meets(source, target):
            return False
        if kind == "audio" and source in self.muted:
            return False
        return kind not in self.off.get(source, frozenset())

    def sources_for(self, target: str, candidates: Iterable[str]) -> list[str]:
        """The candidates ``target`` meets, conciliator first, then by side and id."""
        found = [c for c in candidates if self.meets(c, target)]
        return sorted(found, key=lambda c: (_SIDE_ORDER[self.members[c]], c))

    def with_sending(self, participant: str, kind: Kind, on: bool) -> Routing:
        """The same facts with ``participant``'s own ``kind`` turned on or off."""
        kinds = set(self.off.get(participant, frozenset()))
        if on:
            kinds.discard(kind)
        else:
            kinds.add(kind)
        off = dict(self.off)
        off[participant] = frozenset(kinds)
        return Routing(self.members, self.separate, self.muted, off)


__all__ = ["KINDS", "Kind", "Routing", "may_meet"]
