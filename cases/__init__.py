"""The case portal's domain: accounts, companies, sign-in, sessions and notifications.

No HTTP here: functions take plain values, raise ``core.errors`` codes and commit.
"""
