"""When a conciliation request may be filed: the prior written complaint rule.

The complaint to the company is a precondition. The request is admissible once the company
answered (however unsatisfactorily), or once ``wait_days`` (40 by default) passed since the
complaint was sent without an answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from core.errors import ErrorCode


@dataclass(frozen=True)
class ComplaintCheck:
    admissible: bool
    reason: ErrorCode | None = None
    admissible_from: date | None = None  # when waiting is the only obstacle


def check_complaint(
    sent_on: date | None, answered_on: date | None, today: date, *, wait_days: int = 40
) -> ComplaintCheck:
    """Whether a complaint sent on ``sent_on`` (answered on ``answered_on``) allows filing today."""
    if sent_on is None:
        return ComplaintCheck(False, ErrorCode.COMPLAINT_REQUIRED)
    if sent_on > today:
        return ComplaintCheck(False, ErrorCode.COMPLAINT_IN_FUTURE)
    if answered_on is not None:
        if answered_on < sent_on:
            return ComplaintCheck(False, ErrorCode.ANSWER_BEFORE_COMPLAINT)
        if answered_on > today:
            return ComplaintCheck(False, ErrorCode.ANSWER_IN_FUTURE)
        return ComplaintCheck(True)
    opens = sent_on + timedelta(days=wait_days)
    if today < opens:
        return ComplaintCheck(False, ErrorCode.COMPLAINT_TOO_RECENT, admissible_from=opens)
    return ComplaintCheck(True)
