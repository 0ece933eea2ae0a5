"""Request handlers, grouped by what the person is doing."""
