"""The service's rules for a conciliation request: supply points, the complaint, the life cycle."""

from __future__ import annotations

import itertools
from datetime import date

import pytest

from cases.admissibility import check_complaint
from cases.lifecycle import STEPS, Action, Actor, CaseStatus, Outcome, advance, possible
from cases.supply import Sector, check_pdr, check_pod, check_supply_points, check_water_code
from core.errors import ErrorCode, UserError


@pytest.mark.parametrize(
    "value", ["IT001E12345678", "it001e12345678", "IT 001 E 12345678", "IT012E123456789"]
)
def test_valid_pod(value: str) -> None:
    assert check_pod(value) == value.replace(" ", "").upper()


@pytest.mark.parametrize(
    "value",
    ["IT001X12345678", "FR001E12345678", "IT01E12345678", "IT001E1234567", "IT001E1234567890"],
)
def test_invalid_pod(value: str) -> None:
    assert check_pod(value) == ErrorCode.POD_INVALID


def test_pdr_is_fourteen_digits() -> None:
    assert check_pdr("00881234567890") == "00881234567890"
    assert check_pdr("0088 1234 5678 90") == "00881234567890"
    for wrong in ("0088123456789", "008812345678901", "0088123456789A"):
        assert check_pdr(wrong) == ErrorCode.PDR_INVALID
    assert check_pdr("") == ErrorCode.REQUIRED


def test_water_code() -> None:
    assert check_water_code("ab-123/7") == "AB-123/7"
    assert check_water_code("x") == ErrorCode.WATER_CODE_INVALID
    assert check_water_code("<script>") == ErrorCode.WATER_CODE_INVALID


def test_each_sector_asks_its_own_identifiers() -> None:
    assert set(check_supply_points(Sector.ELECTRICITY, "IT001E12345678", "", "")) == {"pod"}
    assert set(check_supply_points(Sector.GAS, "", "00881234567890", "")) == {"pdr"}
    dual = check_supply_points(Sector.DUAL, "IT001E12345678", "", "")
    assert dual == {"pod": "IT001E12345678", "pdr": ErrorCode.REQUIRED}
    assert check_supply_points(Sector.WATER, "", "", "AB123") == {"water_code": "AB123"}


TODAY = date(2026, 11, 23)


def test_complaint_answered_makes_request_admissible_at_once() -> None:
    result = check_complaint(date(2026, 11, 1), date(2026, 11, 20), TODAY)
    assert result.admissible and result.reason is None


def test_unanswered_complaint_waits_forty_days() -> None:
    early = check_complaint(date(2026, 10, 20), None, TODAY)
    assert not early.admissible and early.reason == ErrorCode.COMPLAINT_TOO_RECENT
    assert early.admissible_from == date(2026, 11, 29)
    assert check_complaint(date(2026, 10, 14), None, TODAY).admissible  # exactly 40 days ago
    assert not check_complaint(date(2026, 10, 15), None, TODAY).admissible


def test_waiting_time_is_configurable() -> None:
    assert check_complaint(date(2026, 11, 1), None, TODAY, wait_days=20).admissible


@pytest.mark.parametrize(
    ("sent", "answered", "reason"),
    [
        (None, None, ErrorCode.COMPLAINT_REQUIRED),
        (date(2026, 12, 1), None, ErrorCode.COMPLAINT_IN_FUTURE),
        (date(2026, 11, 1), date(2026, 10, 1), ErrorCode.ANSWER_BEFORE_COMPLAINT),
        (date(2026, 11, 1), date(2026, 12, 1), ErrorCode.ANSWER_IN_FUTURE),
    ],
)
def test_impossible_complaint_dates(
    sent: date | None, answered: date | None, reason: ErrorCode
) -> None:
    result = check_complaint(sent, answered, TODAY)
    assert not result.admissible and result.reason == reason


def test_the_happy_path_with_integration_and_adjournment() -> None:
    status = CaseStatus.DRAFT
    path = [
        (Action.SUBMIT, Actor.APPLICANT, CaseStatus.SUBMITTED),
        (Action.REQUEST_INTEGRATION, Actor.DESK, CaseStatus.INTEGRATION_REQUESTED),
        (Action.COMPLETE_INTEGRATION, Actor.APPLICANT, CaseStatus.SUBMITTED),
        (Action.ADMIT, Actor.DESK, CaseStatus.ADMITTED),
        (Action.SCHEDULE, Actor.SCHEDULER, CaseStatus.SCHEDULED),
        (Action.HOLD_MEETING, Actor.CONCILIATOR, CaseStatus.MEETING_HELD),
        (Action.ADJOURN, Actor.CONCILIATOR, CaseStatus.ADMITTED),
        (Action.SCHEDULE, Actor.SYSTEM, CaseStatus.SCHEDULED),
        (Action.HOLD_MEETING, Actor.CONCILIATOR, CaseStatus.MEETING_HELD),
    ]
    for action, actor, expected in path:
        status, outcome = advance(status, action, actor)
        assert status == expected and outcome is None
    assert advance(status, Action.RECORD_AGREEMENT, Actor.CONCILIATOR) == (
        CaseStatus.CLOSED,
        Outcome.AGREEMENT,
    )


def test_every_step_not_in_the_table_is_refused() -> None:
    for status, action, actor in itertools.product(CaseStatus, Action, Actor):
        step = STEPS[action]
        if status in step.sources and actor in step.actors:
            assert advance(status, action, actor)[0] == step.target
            continue
        with pytest.raises(UserError) as refused:
            advance(status, action, actor)
        expected = ErrorCode.FORBIDDEN if status in step.sources else ErrorCode.TRANSITION_REFUSED
        assert refused.value.code == expected


def test_closed_is_final() -> None:
    assert possible(CaseStatus.CLOSED, Actor.DESK) == []
    for actor in Actor:
        assert possible(CaseStatus.CLOSED, actor) == []


def test_who_may_do_what() -> None:
    assert possible(CaseStatus.SUBMITTED, Actor.DESK) == [
        Action.REQUEST_INTEGRATION,
        Action.ADMIT,
        Action.DECLARE_NOT_ADMISSIBLE,
    ]
    assert possible(CaseStatus.SUBMITTED, Actor.APPLICANT) == [Action.WITHDRAW]
    assert possible(CaseStatus.SCHEDULED, Actor.COMPANY) == []
    # The applicant cannot withdraw once the meeting was held: the conciliator records the end.
    assert Action.WITHDRAW not in possible(CaseStatus.MEETING_HELD, Actor.APPLICANT)
    assert advance(CaseStatus.INTEGRATION_REQUESTED, Action.EXPIRE_INTEGRATION, Actor.SYSTEM) == (
        CaseStatus.CLOSED,
        Outcome.NOT_ACTIVATED,
    )
