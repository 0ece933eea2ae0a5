"""concilia as ``bench.chat`` runs it: the real application (``web.app.create_app``, settings
from the ``CONCILIA_*`` environment, served as ``concilia serve`` serves it) with its clock frozen
at ``--at``, a moment when the benchmark's meetings are on, so that their rooms are open however
long the run takes.

    python -m bench.chat_server --at 2026-11-30T08:01:00+00:00 --port 8081 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
from datetime import datetime

from core.clock import FakeClock
from core.logs import configure_logging
from core.settings import load_settings
from web.app import create_app
from web.cli import serve_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chat_server", description=__doc__)
    parser.add_argument("--at", required=True, help="the server's time (ISO 8601, with zone)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    app = create_app(settings, clock=FakeClock(datetime.fromisoformat(args.at)))
    serve_app(app, args.host, args.port)


if __name__ == "__main__":
    main()
