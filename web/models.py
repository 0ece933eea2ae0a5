"""Every table of the service, gathered so that migrations see the whole schema."""

from __future__ import annotations

from sqlalchemy import MetaData

from cases import (
    accounts,
    alerts,
    casefile,
    companies,
    documents,
    helpdesk,
    sessions,
    throttle,
    tokens,
)
from core import jobs, mail, quota
from core.db import Base
from rooms import models as rooms_models
from scheduling import bookings, planner

MODULES = (
    alerts,
    bookings,
    planner,
    accounts,
    casefile,
    companies,
    documents,
    helpdesk,
    sessions,
    throttle,
    tokens,
    jobs,
    mail,
    quota,
    rooms_models,
)


def metadata() -> MetaData:
    return Base.metadata
