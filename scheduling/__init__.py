"""Scheduling: the slot calendar, bookings of conciliators and companies, the allocator."""
