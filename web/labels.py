"""What the values of the case domain are called on pages (English message ids)."""

from __future__ import annotations

from cases.documents import Category
from cases.request import ActingAs, CustomerKind, DisputeCategory, MeetingMode, Section
from cases.supply import Sector
from core.i18n import N_

SECTOR = {
    Sector.ELECTRICITY: N_("Electricity"),
    Sector.GAS: N_("Gas"),
    Sector.DUAL: N_("Dual fuel (electricity and gas)"),
    Sector.WATER: N_("Water"),
}
CUSTOMER_KIND = {
    CustomerKind.PERSON: N_("A person (private customer)"),
    CustomerKind.LEGAL_ENTITY: N_("A legal entity (company, association, body, shop…)"),
}
ACTING_AS = {
    ActingAs.SELF: N_("In person (the customer)"),
    ActingAs.DELEGATE: N_("As delegate of the customer"),
    ActingAs.LEGAL_REPRESENTATIVE: N_("As legal representative of the legal entity"),
}
DISPUTE = {
    DisputeCategory.BILLING: N_("Billing"),
    DisputeCategory.METERING: N_("Meter readings and consumption"),
    DisputeCategory.CONTRACT: N_("Contract (activation, change, termination)"),
    DisputeCategory.CONNECTION: N_("Connection and works"),
    DisputeCategory.SUPPLY_QUALITY: N_("Quality and continuity of supply"),
    DisputeCategory.SWITCHING: N_("Change of supplier"),
    DisputeCategory.COMPENSATION: N_("Automatic compensation and refunds"),
    DisputeCategory.OTHER: N_("Other"),
}
MODE = {MeetingMode.CHAT: N_("Chat room"), MeetingMode.VIDEO: N_("Video meeting")}
DOCUMENT = {
    Category.COMPLAINT: N_("Complaint sent to the company"),
    Category.COMPANY_ANSWER: N_("The company's answer"),
    Category.IDENTITY: N_("Identity document"),
    Category.DELEGATION: N_("Delegation"),
    Category.CHAMBER_CERTIFICATE: N_("Chamber of commerce certificate (visura camerale)"),
    Category.BILL: N_("Bill"),
    Category.CONTRACT: N_("Contract"),
    Category.CORRESPONDENCE: N_("Correspondence"),
    Category.COMPANY_DOCUMENT: N_("Company document"),
    Category.MINUTES: N_("Minutes of the meeting"),
    Category.OTHER: N_("Other document"),
}
# What people may choose when they upload (the minutes are the service's own).
UPLOAD_CATEGORIES = [(k, v) for k, v in DOCUMENT.items() if k != Category.MINUTES]
SECTION = {
    Section.APPLICANT: N_("Who applies"),
    Section.SUPPLY: N_("Supply"),
    Section.COMPANY: N_("Company"),
    Section.COMPLAINT: N_("Prior complaint"),
    Section.DISPUTE: N_("Dispute"),
    Section.MEETING: N_("Meeting"),
}
WEEKDAY = {
    "mon": N_("Monday"),
    "tue": N_("Tuesday"),
    "wed": N_("Wednesday"),
    "thu": N_("Thursday"),
    "fri": N_("Friday"),
}
EVENT = {
    "opened": N_("Request started"),
    "submit": N_("Request submitted"),
    "entered_for_customer": N_("Entered by staff for the customer"),
    "request_integration": N_("Documents requested"),
    "complete_integration": N_("Documents completed"),
    "expire_integration": N_("Not activated: documents not received in time"),
    "reminded": N_("Reminder sent"),
    "admit": N_("Admitted"),
    "declare_not_admissible": N_("Declared not admissible"),
    "schedule": N_("Meeting scheduled"),
    "cancel_meeting": N_("Meeting cancelled"),
    "hold_meeting": N_("Meeting held"),
    "adjourn": N_("Meeting adjourned"),
    "record_agreement": N_("Agreement recorded"),
    "record_no_agreement": N_("No agreement recorded"),
    "record_applicant_absent": N_("Applicant absent"),
    "record_company_absent": N_("Company absent"),
    "withdraw": N_("Withdrawn by the applicant"),
    "document_added": N_("Document added"),
    "participation_confirmed": N_("The company confirmed it takes part"),
    "meeting_moved": N_("Meeting moved"),
    "invitation_sent": N_("Invitation sent"),
    "invitation_cancelled": N_("Cancellation sent"),
    "procedure_extended": N_("Procedure extended"),
}
ACTOR = {
    "applicant": N_("Applicant"),
    "company": N_("Company"),
    "desk": N_("Conciliation Service"),
    "scheduler": N_("Scheduler"),
    "conciliator": N_("Conciliator"),
    "system": N_("System"),
}
