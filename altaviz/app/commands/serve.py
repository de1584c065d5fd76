"""``altaviz serve``: the acknowledgement server (one-tap ack links, alert pages, health)."""

from __future__ import annotations

import argparse
from typing import Any

from altaviz.app.context import App
from altaviz.app.web import app_for


def register(sub: Any) -> None:
    """Add ``serve``."""
    p = sub.add_parser(
        "serve", help="run the acknowledgement web server",
        description="Serves the links in notifications: GET /ack/TOKEN (confirm page), POST "
                    "/ack/TOKEN (acknowledge), GET /alerts/ALERT?token=... (history), GET "
                    "/healthz. Links are built from ALTAVIZ_PUBLIC_URL and signed with "
                    "ALTAVIZ_LINK_SECRET, which is required unless --demo.")
    p.add_argument("--host", help="bind address (default: ALTAVIZ_HTTP_HOST)")
    p.add_argument("--port", type=int, help="port (default: ALTAVIZ_HTTP_PORT)")
    p.add_argument("--demo", action="store_true",
                   help="local demo: without ALTAVIZ_LINK_SECRET use a generated secret kept "
                        "in DATA_DIR/link_secret (shared with the demo worker), and serve the "
                        "demo inbox at /inbox")
    p.add_argument("--inbox", action="store_true",
                   help="serve the demo inbox (/inbox, POST /inbox/receive/MAILBOX) without "
                        "--demo")
    p.add_argument("--ack-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="wait this long for a worker to take an acknowledgement before "
                        "queueing it as a durable signal (default 5)")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, app: App) -> int:
    import uvicorn

    settings = app.settings
    host = args.host or settings.http_host
    port = args.port or settings.http_port
    app.temporal_address()  # start (or attach to) the embedded dev server before serving
    web = app_for(app, demo=args.demo, inbox=args.inbox, ack_timeout=args.ack_timeout)
    base = settings.public_url or f"http://{host}:{port}"
    print(f"altaviz serve: listening on http://{host}:{port} (links: {base})", flush=True)
    uvicorn.run(web, host=host, port=port, log_level=settings.log_level.lower(),
                server_header=False)
    return 0
