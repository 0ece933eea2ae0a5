"""What each error code says to a person (English message ids, translated at render time)."""

from __future__ import annotations

from core.errors import ErrorCode
from core.i18n import N_

MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.REQUIRED: N_("This field is required."),
    ErrorCode.TOO_LONG: N_("This value is too long."),
    ErrorCode.INVALID_CHOICE: N_("Choose one of the options offered."),
    ErrorCode.NOT_FOUND: N_("The page or item you asked for does not exist."),
    ErrorCode.FORBIDDEN: N_("You are not allowed to do this."),
    ErrorCode.UNAUTHENTICATED: N_("Please sign in first."),
    ErrorCode.CSRF_FAILED: N_(
        "The form had expired or did not come from this site. Reload the page and try again."
    ),
    ErrorCode.BAD_REQUEST: N_("The request is not valid."),
    ErrorCode.RATE_LIMITED: N_("Too many requests: wait a moment and try again."),
    ErrorCode.CONFLICT: N_("This cannot be done in the current state."),
    ErrorCode.INTERNAL: N_("Something went wrong on our side: please try again."),
    ErrorCode.UNAVAILABLE: N_("The service is briefly unavailable: try again in a few seconds."),
    ErrorCode.TAX_CODE_INVALID: N_(
        "This is not a valid codice fiscale: check the 16 characters, the last is a check letter."
    ),
    ErrorCode.VAT_INVALID: N_(
        "This is not a valid partita IVA: it has 11 digits, the last is a check digit."
    ),
    ErrorCode.EMAIL_INVALID: N_("This is not a valid e-mail address."),
    ErrorCode.MOBILE_INVALID: N_(
        "This is not a valid mobile number (for example 333 123 4567 or +39 333 123 4567)."
    ),
    ErrorCode.NAME_INVALID: N_("Use letters, spaces, apostrophes or hyphens only."),
    ErrorCode.USERNAME_INVALID: N_(
        "Use 3 to 40 letters, digits, dots, hyphens or underscores,"
        " starting with a letter or digit."
    ),
    ErrorCode.USERNAME_TAKEN: N_("This username is already taken: choose another."),
    ErrorCode.COMPANY_NAME_TAKEN: N_("A company with this name already exists."),
    ErrorCode.PASSWORD_TOO_SHORT: N_("The password must be at least 8 characters long."),
    ErrorCode.PASSWORD_TOO_LONG: N_("The password is too long (at most 1024 characters)."),
    ErrorCode.PASSWORD_NO_UPPER: N_("The password must contain at least one upper-case letter."),
    ErrorCode.PASSWORD_NO_LOWER: N_("The password must contain at least one lower-case letter."),
    ErrorCode.PASSWORD_NO_DIGIT: N_("The password must contain at least one digit."),
    ErrorCode.PASSWORD_NO_SPECIAL: N_(
        "The password must contain at least one special character (for example ! ? # or a space)."
    ),
    ErrorCode.PASSWORD_HAS_USERNAME: N_("The password must not contain the username."),
    ErrorCode.PASSWORD_HAS_FIRST_NAME: N_("The password must not contain your first name."),
    ErrorCode.PASSWORD_HAS_LAST_NAME: N_("The password must not contain your last name."),
    ErrorCode.PASSWORD_COMMON: N_(
        "This password is among the most common ones and easy to guess: choose another."
    ),
    ErrorCode.PASSWORD_REUSED: N_("The new password must differ from your last three passwords."),
    ErrorCode.PASSWORD_MISMATCH: N_("The two passwords do not match."),
    ErrorCode.PASSWORD_WRONG: N_("The current password is not right."),
    ErrorCode.LOGIN_FAILED: N_("Wrong username or password."),
    ErrorCode.LOGIN_THROTTLED: N_(
        "Too many failed attempts. Wait %(seconds)s seconds before trying again."
    ),
    ErrorCode.EMAIL_NOT_VERIFIED: N_(
        "Your e-mail address is not confirmed yet. Open the link we sent you; we have just sent"
        " a new one if the last was more than ten minutes old."
    ),
    ErrorCode.ACCOUNT_PENDING_APPROVAL: N_(
        "Your account awaits activation by an administrator."
        " You will get an e-mail when it is active."
    ),
    ErrorCode.ACCOUNT_DISABLED: N_("This account is disabled. Write to the help desk."),
    ErrorCode.ACCOUNT_DISABLED_INACTIVE: N_(
        "This account was disabled because it was not used for a long time. Re-enable it by"
        " resetting your password."
    ),
    ErrorCode.TOKEN_INVALID: N_(
        "This link is not valid: it was already used, replaced by a newer one, or expired."
    ),
    ErrorCode.CODE_INVALID: N_("The code is not right. Check it and try again."),
    ErrorCode.CODE_EXHAUSTED: N_(
        "This code can no longer be used. Sign in again to receive a new one."
    ),
    ErrorCode.MFA_REQUIRED_FOR_STAFF: N_("Staff accounts must sign in in two steps."),
    ErrorCode.POD_INVALID: N_(
        "This is not a valid POD: it reads like IT001E12345678 (IT, three digits, E, eight digits)."
    ),
    ErrorCode.PDR_INVALID: N_("This is not a valid PDR: it has 14 digits."),
    ErrorCode.WATER_CODE_INVALID: N_(
        "This is not a valid customer code: copy it from your water bill (3 to 30 characters)."
    ),
    ErrorCode.COMPLAINT_REQUIRED: N_(
        "A written complaint to the company must come first: give the date you sent it."
    ),
    ErrorCode.COMPLAINT_IN_FUTURE: N_("The complaint cannot have been sent after today."),
    ErrorCode.ANSWER_BEFORE_COMPLAINT: N_("The company cannot have answered before the complaint."),
    ErrorCode.ANSWER_IN_FUTURE: N_("The company's answer cannot be dated after today."),
    ErrorCode.COMPLAINT_TOO_RECENT: N_(
        "The company still has time to answer your complaint: without an answer you can file the"
        " request from %(date)s."
    ),
    ErrorCode.DATE_INVALID: N_("Enter a valid date (day, month and year)."),
    ErrorCode.ACTING_AS_NOT_ALLOWED: N_(
        "Your account cannot file in this capacity: a delegate files as delegate, a customer in"
        " person or as legal representative, staff for a private customer in person."
    ),
    ErrorCode.POSTAL_ONLY_PRIVATE: N_(
        "Only private customers may file by post or e-mail: a legal entity files through the"
        " portal."
    ),
    ErrorCode.LEGAL_REP_NEEDS_ENTITY: N_(
        "A legal entity files through its legal representative or a delegate; a person files in"
        " person or through a delegate."
    ),
    ErrorCode.MANDATE_MUST_SETTLE: N_(
        "The delegation must allow you to settle the dispute: confirm that it does."
    ),
    ErrorCode.POSTCODE_INVALID: N_("A postcode (CAP) has five digits."),
    ErrorCode.COMPANY_NOT_IN_SECTOR: N_(
        "This company does not supply the sector you chose: check the sector or the company."
    ),
    ErrorCode.AMOUNT_INVALID: N_("Enter an amount in euros, such as 120,50."),
    ErrorCode.AVAILABILITY_REQUIRED: N_(
        "Choose at least one day and time you can attend, or write alternatives in the notes."
    ),
    ErrorCode.REQUEST_INCOMPLETE: N_(
        "Some sections of the request are incomplete: complete the marked ones."
    ),
    ErrorCode.ATTACHMENTS_MISSING: N_(
        "Some mandatory attachments are missing: add them before submitting."
    ),
    ErrorCode.DISPUTE_ALREADY_CLOSED: N_(
        "This dispute was already handled in case %(case_code)s (conciliated, withdrawn or archived"
        " for absence) and cannot be filed again."
    ),
    ErrorCode.DISPUTE_ALREADY_OPEN: N_(
        "A request for this dispute is already open: case %(case_code)s."
    ),
    ErrorCode.MESSAGE_REQUIRED: N_("Write a message saying what is needed."),
    ErrorCode.SLOT_NOT_AVAILABLE: N_(
        "There is no meeting slot at that time (slots: Monday to Friday at 9:00, 10:30, 12:00,"
        " 14:00, 15:30 and 17:00). %(reason)s"
    ),
    ErrorCode.PAST_DEADLINE: N_(
        "That slot is after the case's deadline for its meeting (%(deadline)s)."
    ),
    ErrorCode.TOO_SOON: N_(
        "That slot is too soon: the parties need notice; the first possible day is %(earliest)s."
    ),
    ErrorCode.SLOT_TAKEN: N_(
        "That slot was just taken (the conciliator or the case is already booked): choose another."
    ),
    ErrorCode.CONCILIATOR_UNAVAILABLE: N_("The conciliator does not work or is absent that day."),
    ErrorCode.CONCILIATOR_DAY_FULL: N_("The conciliator has no more meetings free that day."),
    ErrorCode.COMPANY_FULL: N_(
        "The company's representatives cannot attend another meeting in that slot."
    ),
    ErrorCode.PROPOSAL_STALE: N_(
        "Bookings, absences or cases changed since this proposal was made: make a new one."
    ),
    ErrorCode.MEETING_NOT_STARTED: N_(
        "The meeting has not started yet: it can be recorded as held from %(opens)s."
    ),
    ErrorCode.ALREADY_EXTENDED: N_("The procedure has already been extended once."),
    ErrorCode.WEEKDAY_HAS_MEETINGS: N_(
        "The conciliator has meetings booked on the working days you are removing: %(count)s"
        " to move first (%(days)s). Move them from their case files, then try again."
    ),
    ErrorCode.DAILY_LIMIT_RANGE: N_("The daily limit is a whole number from 1 to 6 meetings."),
    ErrorCode.DAILY_LIMIT_BELOW_BOOKED: N_(
        "Some days already have more meetings than the new limit: %(count)s to move first"
        " (%(days)s). Move them from their case files, then try again."
    ),
    ErrorCode.DAY_PAST: N_("That day has passed: choose today or a later day."),
    ErrorCode.DAYS_BACKWARDS: N_("The last day comes before the first."),
    ErrorCode.ABSENCE_ON_WEEKEND: N_(
        "There are no meetings on Saturdays and Sundays: choose days from Monday to Friday."
    ),
    ErrorCode.ABSENCE_TOO_LONG: N_(
        "One absence covers at most %(limit)s days: add a longer one in parts."
    ),
    ErrorCode.ABSENCE_HAS_MEETINGS: N_(
        "The conciliator has meetings booked on those days: %(count)s to move first"
        " (%(days)s). Move them from their case files, then try again."
    ),
    ErrorCode.ABSENCE_EXISTS: N_("An absence is already recorded on %(days)s."),
    ErrorCode.CAPACITY_RANGE: N_(
        "The meetings a company attends in parallel are a whole number from 1 to 10."
    ),
    ErrorCode.CAPACITY_BELOW_BOOKED: N_(
        "Some slots already hold more of the company's meetings than the new number: %(count)s"
        " to move first (%(slots)s). Move them from their case files, then try again."
    ),
    ErrorCode.ROOM_CLOSED: N_("The meeting room is not open."),
    ErrorCode.NOT_ADMITTED: N_("Wait until the conciliator admits you to the meeting."),
    ErrorCode.REMOVED: N_("The conciliator removed you from this meeting."),
    ErrorCode.MUTED: N_("The conciliator has muted your chat."),
    ErrorCode.SEPARATE_SESSION: N_(
        "The conciliator is in a separate session with the other party: please wait."
    ),
    ErrorCode.PROPOSAL_NOT_ASKED: N_(
        "The conciliator may offer a settlement proposal only when both parties ask for one."
    ),
    ErrorCode.AGREEMENT_CHANGED: N_(
        "The text of the agreement has changed: read it again before accepting."
    ),
    ErrorCode.ACCEPTANCE_MISSING: N_("Both parties must accept the agreement first."),
    ErrorCode.NO_AGREEMENT_TEXT: N_("Write the text of the agreement first."),
    ErrorCode.DOCUMENT_PRIVATE: N_(
        "Not everyone here may see this document in the case file, so it cannot be shared now."
    ),
    ErrorCode.PERIOD_INVALID: N_(
        "The period must end on or after its first day and span at most %(days)s days."
    ),
    ErrorCode.MEDIA_UNAVAILABLE: N_(
        "Video is not available right now: the meeting goes on in the chat."
    ),
    ErrorCode.TRANSITION_REFUSED: N_("This step is not possible in the current state of the case."),
    ErrorCode.FILE_TYPE_NOT_ALLOWED: N_("This type of file is not accepted: see the allowed ones."),
    ErrorCode.FILE_CONTENT_MISMATCH: N_(
        "The content of the file does not match its extension: save it again in that format."
    ),
    ErrorCode.FILE_ARCHIVE_TOO_BIG: N_(
        "The document expands to too much data or too many parts: save it again, smaller."
    ),
    ErrorCode.FILE_EMPTY: N_("The file is empty."),
    ErrorCode.FILE_TOO_LARGE: N_("The file is too large: each file may be at most 15 MB."),
    ErrorCode.TOO_MANY_FILES: N_("At most 5 files may be attached."),
    ErrorCode.FILES_TOO_LARGE: N_("The attached files may total at most 15 MB."),
}


def message_for(code: ErrorCode) -> str:
    return MESSAGES.get(code, MESSAGES[ErrorCode.BAD_REQUEST])


# Where a code means something more precise in the meeting room than elsewhere.
IN_ROOM: dict[ErrorCode, str] = {
    ErrorCode.CODE_EXHAUSTED: N_(
        "This code can no longer be used: ask for a new one with “Send me a code”."
    ),
    ErrorCode.TOKEN_INVALID: N_("The room could not check your access: reload the page."),
    ErrorCode.NOT_FOUND: N_("This person or document is not, or no longer, part of this meeting."),
}
