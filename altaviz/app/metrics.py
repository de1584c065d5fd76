"""The Prometheus endpoint (``/metrics`` on the acknowledgement server).

Every figure is read from PostgreSQL at scrape time (as the schema owner, across
organizations), so it is the same whichever process the workers, the ETL or the web server run
in, and survives restarts: open alerts by organization and severity, notifications sent and
failed by channel, deliveries waiting, the pipeline's last run duration, last success and lag
behind the newest landing file, and rows quarantined by reason.

Organization ids are tenant data: the endpoint answers a request that carries
``Authorization: Bearer <ALTAVIZ_METRICS_TOKEN>``, and, with no token set, only requests from
this machine that no proxy relayed (no ``X-Forwarded-For`` or ``Forwarded`` header).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from altaviz.core import db


class AltavizCollector(Collector):
    """Reads the figures from PostgreSQL (and the landing folder's newest file) per scrape."""

    def __init__(self, owner_url: str, landing: Path) -> None:
        self._url = owner_url
        self._landing = landing
        self._q = db.queries("metrics")

    def collect(self) -> Iterator[Metric]:
        """Every series, from one connection."""
        up = GaugeMetricFamily("altaviz_metrics_database_up",
                               "1 when the figures below could be read from PostgreSQL")
        try:
            with db.connect(self._url, autocommit=True) as conn:
                rows = {name: conn.execute(self._q[name]).fetchall()
                        for name in ("open_alerts", "notifications_by_channel",
                                     "deliveries_waiting", "last_runs", "quarantined_by_reason")}
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        alerts = GaugeMetricFamily("altaviz_alerts_open", "Alerts not resolved, by organization "
                                   "and severity", labels=["org", "severity"])
        for org, severity, n in rows["open_alerts"]:
            alerts.add_metric([org, severity], n)
        yield alerts

        sent = CounterMetricFamily("altaviz_notifications_sent", "Deliveries sent, by channel "
                                   "(URL scheme)", labels=["channel"])
        failed = CounterMetricFamily("altaviz_notifications_failed", "Delivery attempts that "
                                     "failed, by channel (URL scheme)", labels=["channel"])
        for channel, status, n in rows["notifications_by_channel"]:
            (sent if status == "sent" else failed).add_metric([channel], n)
        yield sent
        yield failed

        waiting = GaugeMetricFamily("altaviz_notification_deliveries_waiting",
                                    "Deliveries whose attempts have all failed (latest within a "
                                    "day): waiting for a retry or for the channel to be fixed")
        waiting.add_metric([], rows["deliveries_waiting"][0][0])
        yield waiting

        duration, success_at, success_started = rows["last_runs"][0]
        yield _gauge("altaviz_pipeline_run_duration_seconds",
                     "Duration of the ETL of the latest finished pipeline run", duration)
        yield _gauge("altaviz_pipeline_last_success_timestamp_seconds",
                     "When the latest successful pipeline run finished (Unix time)", success_at)
        newest = newest_file_mtime(self._landing)
        lag = 0.0
        if newest is not None:
            lag = max(0.0, newest - float(success_started)) if success_started is not None \
                else time.time() - newest
        yield _gauge("altaviz_pipeline_lag_seconds",
                     "How long the newest landing file has waited for a successful run (0: "
                     "loaded)", lag)

        quarantined = CounterMetricFamily("altaviz_etl_rows_quarantined",
                                          "Rows the ETL set aside, by reason", labels=["reason"])
        for reason, n in rows["quarantined_by_reason"]:
            quarantined.add_metric([reason], n)
        yield quarantined


def _gauge(name: str, doc: str, value: Any) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], float(value) if value is not None else float("nan"))
    return g


def newest_file_mtime(folder: Path) -> float | None:
    """Modification time of the newest file under ``folder`` (None: none)."""
    newest: float | None = None
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                m = os.stat(os.path.join(root, name)).st_mtime
            except OSError:
                continue
            newest = m if newest is None or m > newest else newest
    return newest


class _Guard:
    """Lets a scrape through with the right bearer token, or (none set) from this machine."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self._app = app
        self._token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body",
                        "body": b"metrics: set ALTAVIZ_METRICS_TOKEN and send it as a bearer "
                                b"token, or scrape from this machine\n"})
            return
        await self._app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        if self._token:
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"").decode("latin-1")
            return hmac.compare_digest(given, f"Bearer {self._token}")
        headers = dict(scope.get("headers") or [])
        if b"x-forwarded-for" in headers or b"forwarded" in headers:
            return False  # relayed by a proxy on this machine: the client is elsewhere
        client = scope.get("client")
        try:
            return client is not None and ipaddress.ip_address(client[0]).is_loopback
        except ValueError:
            return False


def metrics_app(owner_url: str, landing: Path, token: str | None = None) -> ASGIApp:
    """The ASGI app serving the exposition format, guarded (see the module docstring)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AltavizCollector(owner_url, landing))
    return _Guard(make_asgi_app(registry), token)
