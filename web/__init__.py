"""The web edge: the aiohttp application (the only composition root), pages, JSON API, CLI."""
