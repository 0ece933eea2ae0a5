"""Shared infrastructure: settings, database, clock, ids, error codes, mail outbox, i18n.

No domain logic lives here; every other package may import it.
"""
