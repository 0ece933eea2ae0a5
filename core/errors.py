"""The one list of error codes, and the two kinds of error that carry them.

A ``UserError`` is something the person can correct (a wrong field, a refused action); a
``ProtocolError`` is a client breaking the rules of the interface (bad payload, forbidden
request). They become an HTTP JSON body, a form message or a Socket.IO ack only at the edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class ErrorCode(StrEnum):
    # generic
    REQUIRED = "required"
    TOO_LONG = "too_long"
    INVALID_CHOICE = "invalid_choice"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    UNAUTHENTICATED = "unauthenticated"
    CSRF_FAILED = "csrf_failed"
    BAD_REQUEST = "bad_request"
    RATE_LIMITED = "rate_limited"
    CONFLICT = "conflict"
    INTERNAL = "internal"  # our fault, logged; the client may retry
    UNAVAILABLE = "unavailable"  # a dependency (database, Redis) is down: retry later
    # identity fields
    TAX_CODE_INVALID = "tax_code_invalid"
    VAT_INVALID = "vat_invalid"
    EMAIL_INVALID = "email_invalid"
    MOBILE_INVALID = "mobile_invalid"
    NAME_INVALID = "name_invalid"
    USERNAME_INVALID = "username_invalid"
    USERNAME_TAKEN = "username_taken"
    COMPANY_NAME_TAKEN = "company_name_taken"
    # password policy, one code per rule
    PASSWORD_TOO_SHORT = "password_too_short"
    PASSWORD_TOO_LONG = "password_too_long"
    PASSWORD_NO_UPPER = "password_no_upper"
    PASSWORD_NO_LOWER = "password_no_lower"
    PASSWORD_NO_DIGIT = "password_no_digit"
    PASSWORD_NO_SPECIAL = "password_no_special"
    PASSWORD_HAS_USERNAME = "password_has_username"
    PASSWORD_HAS_FIRST_NAME = "password_has_first_name"
    PASSWORD_HAS_LAST_NAME = "password_has_last_name"
    PASSWORD_COMMON = "password_common"
    PASSWORD_REUSED = "password_reused"
    PASSWORD_MISMATCH = "password_mismatch"
    PASSWORD_WRONG = "password_wrong"
    # sign-in and tokens
    LOGIN_FAILED = "login_failed"
    LOGIN_THROTTLED = "login_throttled"
    EMAIL_NOT_VERIFIED = "email_not_verified"
    ACCOUNT_PENDING_APPROVAL = "account_pending_approval"
    ACCOUNT_DISABLED = "account_disabled"
    ACCOUNT_DISABLED_INACTIVE = "account_disabled_inactive"
    TOKEN_INVALID = "token_invalid"
    CODE_INVALID = "code_invalid"
    CODE_EXHAUSTED = "code_exhausted"
    MFA_REQUIRED_FOR_STAFF = "mfa_required_for_staff"
    # supply points and the prior complaint
    POD_INVALID = "pod_invalid"
    PDR_INVALID = "pdr_invalid"
    WATER_CODE_INVALID = "water_code_invalid"
    COMPLAINT_REQUIRED = "complaint_required"
    COMPLAINT_IN_FUTURE = "complaint_in_future"
    ANSWER_BEFORE_COMPLAINT = "answer_before_complaint"
    ANSWER_IN_FUTURE = "answer_in_future"
    COMPLAINT_TOO_RECENT = "complaint_too_recent"
    # the conciliation request
    DATE_INVALID = "date_invalid"
    ACTING_AS_NOT_ALLOWED = "acting_as_not_allowed"
    POSTAL_ONLY_PRIVATE = "postal_only_private"
    LEGAL_REP_NEEDS_ENTITY = "legal_rep_needs_entity"
    MANDATE_MUST_SETTLE = "mandate_must_settle"
    POSTCODE_INVALID = "postcode_invalid"
    COMPANY_NOT_IN_SECTOR = "company_not_in_sector"
    AMOUNT_INVALID = "amount_invalid"
    AVAILABILITY_REQUIRED = "availability_required"
    REQUEST_INCOMPLETE = "request_incomplete"
    ATTACHMENTS_MISSING = "attachments_missing"
    DISPUTE_ALREADY_CLOSED = "dispute_already_closed"
    DISPUTE_ALREADY_OPEN = "dispute_already_open"
    MESSAGE_REQUIRED = "message_required"
    # scheduling
    SLOT_NOT_AVAILABLE = "slot_not_available"
    PAST_DEADLINE = "past_deadline"
    TOO_SOON = "too_soon"
    SLOT_TAKEN = "slot_taken"
    CONCILIATOR_UNAVAILABLE = "conciliator_unavailable"
    CONCILIATOR_DAY_FULL = "conciliator_day_full"
    COMPANY_FULL = "company_full"
    PROPOSAL_STALE = "proposal_stale"
    MEETING_NOT_STARTED = "meeting_not_started"
    ALREADY_EXTENDED = "already_extended"
    # scheduling resources (working days, daily limits, absences, company capacity)
    WEEKDAY_HAS_MEETINGS = "weekday_has_meetings"
    DAILY_LIMIT_RANGE = "daily_limit_range"
    DAILY_LIMIT_BELOW_BOOKED = "daily_limit_below_booked"
    DAY_PAST = "day_past"
    DAYS_BACKWARDS = "days_backwards"
    ABSENCE_ON_WEEKEND = "absence_on_weekend"
    ABSENCE_TOO_LONG = "absence_too_long"
    ABSENCE_HAS_MEETINGS = "absence_has_meetings"
    ABSENCE_EXISTS = "absence_exists"
    CAPACITY_RANGE = "capacity_range"
    CAPACITY_BELOW_BOOKED = "capacity_below_booked"
    # the meeting room
    ROOM_CLOSED = "room_closed"
    NOT_ADMITTED = "not_admitted"
    REMOVED = "removed"
    MUTED = "muted"
    SEPARATE_SESSION = "separate_session"
    PROPOSAL_NOT_ASKED = "proposal_not_asked"
    AGREEMENT_CHANGED = "agreement_changed"
    ACCEPTANCE_MISSING = "acceptance_missing"
    NO_AGREEMENT_TEXT = "no_agreement_text"
    DOCUMENT_PRIVATE = "document_private"
    PERIOD_INVALID = "period_invalid"
    MEDIA_UNAVAILABLE = "media_unavailable"  # no video now (server ports exhausted): use the chat
    # the life of a case
    TRANSITION_REFUSED = "transition_refused"
    # uploaded files
    FILE_TYPE_NOT_ALLOWED = "file_type_not_allowed"
    FILE_CONTENT_MISMATCH = "file_content_mismatch"
    FILE_ARCHIVE_TOO_BIG = "file_archive_too_big"
    FILE_EMPTY = "file_empty"
    FILE_TOO_LARGE = "file_too_large"
    TOO_MANY_FILES = "too_many_files"
    FILES_TOO_LARGE = "files_too_large"


class ConciliaError(Exception):
    """Base of the errors that carry a code."""

    def __init__(self, code: ErrorCode, detail: str = "", **params: object) -> None:
        super().__init__(detail or code.value)
        self.code = code
        self.detail = detail
        self.params = params


class UserError(ConciliaError):
    """The person can correct this: a refused action with a reason."""


class ProtocolError(ConciliaError):
    """The client broke the interface's rules."""


class FieldErrors(UserError):
    """Several form fields are wrong; each field maps to its list of codes."""

    def __init__(self, fields: Mapping[str, list[ErrorCode]]) -> None:
        first = next(iter(fields.values()))[0] if fields else ErrorCode.BAD_REQUEST
        super().__init__(first, "invalid fields: " + ", ".join(sorted(fields)))
        self.fields: dict[str, list[ErrorCode]] = {k: list(v) for k, v in fields.items()}


class Throttled(UserError):
    """Too many attempts; ``retry_after`` seconds must pass."""

    def __init__(self, retry_after: int, code: ErrorCode = ErrorCode.LOGIN_THROTTLED) -> None:
        super().__init__(code, retry_after=retry_after)
        self.retry_after = retry_after
