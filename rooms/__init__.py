"""The virtual meeting room's domain: meetings, sessions, outcome and minutes.

No HTTP or Socket.IO here: functions take plain values and return plain values or bytes.
"""
