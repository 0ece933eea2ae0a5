"""The life of a conciliation case: one state machine, with who may take each step.

draft → submitted → (integration requested ⇄ submitted) → admitted → scheduled → meeting held
→ closed (agreement, no agreement, applicant absent, company absent), with adjournment from a
held meeting back to scheduled. Staff may declare a submitted request not admissible; an
integration left unanswered past its time closes the case as not activated; the applicant may
withdraw until the meeting is held. Every other step is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.errors import ErrorCode, UserError
from core.i18n import N_


class CaseStatus(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    INTEGRATION_REQUESTED = "integration_requested"
    ADMITTED = "admitted"
    SCHEDULED = "scheduled"
    MEETING_HELD = "meeting_held"
    CLOSED = "closed"


class Outcome(StrEnum):
    AGREEMENT = "agreement"
    NO_AGREEMENT = "no_agreement"
    APPLICANT_ABSENT = "applicant_absent"
    COMPANY_ABSENT = "company_absent"
    WITHDRAWN = "withdrawn"
    NOT_ADMISSIBLE = "not_admissible"
    NOT_ACTIVATED = "not_activated"


STATUS_LABELS: dict[str, str] = {
    CaseStatus.DRAFT: N_("Draft"),
    CaseStatus.SUBMITTED: N_("Submitted"),
    CaseStatus.INTEGRATION_REQUESTED: N_("Integration requested"),
    CaseStatus.ADMITTED: N_("Admitted"),
    CaseStatus.SCHEDULED: N_("Meeting scheduled"),
    CaseStatus.MEETING_HELD: N_("Meeting held"),
    CaseStatus.CLOSED: N_("Closed"),
}
OUTCOME_LABELS: dict[str, str] = {
    Outcome.AGREEMENT: N_("Agreement"),
    Outcome.NO_AGREEMENT: N_("No agreement"),
    Outcome.APPLICANT_ABSENT: N_("Archived: applicant absent"),
    Outcome.COMPANY_ABSENT: N_("Company absent"),
    Outcome.WITHDRAWN: N_("Withdrawn"),
    Outcome.NOT_ADMISSIBLE: N_("Not admissible"),
    Outcome.NOT_ACTIVATED: N_("Not activated: the request was not completed in time"),
}

# Outcomes after which the same dispute cannot be filed again (the service's rule).
FINAL_FOR_REFILING = frozenset({Outcome.AGREEMENT, Outcome.WITHDRAWN, Outcome.APPLICANT_ABSENT})


class Actor(StrEnum):
    """Who takes a step, as the case sees them (not the account's role)."""

    APPLICANT = "applicant"  # the customer, or only the delegate when the case is delegated
    COMPANY = "company"  # a representative of the company the dispute is against
    DESK = "desk"  # help-desk operator or admin: admission and integration
    SCHEDULER = "scheduler"
    CONCILIATOR = "conciliator"  # the conciliator of the case's meeting
    SYSTEM = "system"  # deadlines that run out by themselves


class Action(StrEnum):
    SUBMIT = "submit"
    REQUEST_INTEGRATION = "request_integration"
    COMPLETE_INTEGRATION = "complete_integration"
    EXPIRE_INTEGRATION = "expire_integration"
    ADMIT = "admit"
    DECLARE_NOT_ADMISSIBLE = "declare_not_admissible"
    SCHEDULE = "schedule"
    CANCEL_MEETING = "cancel_meeting"
    HOLD_MEETING = "hold_meeting"
    ADJOURN = "adjourn"
    RECORD_AGREEMENT = "record_agreement"
    RECORD_NO_AGREEMENT = "record_no_agreement"
    RECORD_APPLICANT_ABSENT = "record_applicant_absent"
    RECORD_COMPANY_ABSENT = "record_company_absent"
    WITHDRAW = "withdraw"


@dataclass(frozen=True)
class Step:
    sources: frozenset[CaseStatus]
    target: CaseStatus
    actors: frozenset[Actor]
    outcome: Outcome | None = None


def _step(
    sources: set[CaseStatus], target: CaseStatus, actors: set[Actor], outcome: Outcome | None = None
) -> Step:
    return Step(frozenset(sources), target, frozenset(actors), outcome)


S = CaseStatus
A = Actor
STEPS: dict[Action, Step] = {
    Action.SUBMIT: _step({S.DRAFT}, S.SUBMITTED, {A.APPLICANT, A.DESK}),
    Action.REQUEST_INTEGRATION: _step({S.SUBMITTED}, S.INTEGRATION_REQUESTED, {A.DESK}),
    Action.COMPLETE_INTEGRATION: _step(
        {S.INTEGRATION_REQUESTED}, S.SUBMITTED, {A.APPLICANT, A.DESK}
    ),
    Action.EXPIRE_INTEGRATION: _step(
        {S.INTEGRATION_REQUESTED}, S.CLOSED, {A.SYSTEM}, Outcome.NOT_ACTIVATED
    ),
    Action.ADMIT: _step({S.SUBMITTED}, S.ADMITTED, {A.DESK}),
    Action.DECLARE_NOT_ADMISSIBLE: _step(
        {S.SUBMITTED, S.INTEGRATION_REQUESTED}, S.CLOSED, {A.DESK}, Outcome.NOT_ADMISSIBLE
    ),
    Action.SCHEDULE: _step({S.ADMITTED}, S.SCHEDULED, {A.SCHEDULER, A.SYSTEM}),
    Action.CANCEL_MEETING: _step({S.SCHEDULED}, S.ADMITTED, {A.SCHEDULER}),
    Action.HOLD_MEETING: _step({S.SCHEDULED}, S.MEETING_HELD, {A.CONCILIATOR}),
    # An adjourned case waits for its next slot again (booked at once when one is free).
    Action.ADJOURN: _step({S.MEETING_HELD}, S.ADMITTED, {A.CONCILIATOR, A.SCHEDULER}),
    Action.RECORD_AGREEMENT: _step({S.MEETING_HELD}, S.CLOSED, {A.CONCILIATOR}, Outcome.AGREEMENT),
    Action.RECORD_NO_AGREEMENT: _step(
        {S.MEETING_HELD}, S.CLOSED, {A.CONCILIATOR}, Outcome.NO_AGREEMENT
    ),
    Action.RECORD_APPLICANT_ABSENT: _step(
        {S.MEETING_HELD}, S.CLOSED, {A.CONCILIATOR}, Outcome.APPLICANT_ABSENT
    ),
    Action.RECORD_COMPANY_ABSENT: _step(
        {S.MEETING_HELD}, S.CLOSED, {A.CONCILIATOR}, Outcome.COMPANY_ABSENT
    ),
    Action.WITHDRAW: _step(
        {S.SUBMITTED, S.INTEGRATION_REQUESTED, S.ADMITTED, S.SCHEDULED},
        S.CLOSED,
        {A.APPLICANT},
        Outcome.WITHDRAWN,
    ),
}


def advance(status: CaseStatus, action: Action, actor: Actor) -> tuple[CaseStatus, Outcome | None]:
    """The status (and outcome) after ``actor`` takes ``action``; refused steps raise.

    A step that does not exist from ``status`` raises ``TRANSITION_REFUSED``; one that exists
    but belongs to someone else raises ``FORBIDDEN``.
    """
    step = STEPS[action]
    if status not in step.sources:
        raise UserError(
            ErrorCode.TRANSITION_REFUSED, f"{action.value} is not possible from {status.value}"
        )
    if actor not in step.actors:
        raise UserError(ErrorCode.FORBIDDEN, f"{actor.value} may not {action.value}")
    return step.target, step.outcome


def possible(status: CaseStatus, actor: Actor) -> list[Action]:
    """The steps ``actor`` may take from ``status`` (to offer as buttons)."""
    return [a for a, s in STEPS.items() if status in s.sources and actor in s.actors]
