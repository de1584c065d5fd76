"""Payloads stay decodable across a rolling upgrade: an older worker must read what a newer one
wrote, so every model that crosses Temporal ignores fields it does not know."""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter

from altaviz.core import payloads

MODELS = sorted((obj for obj in vars(payloads).values()
                 if inspect.isclass(obj) and issubclass(obj, BaseModel)
                 and obj.__module__ == payloads.__name__), key=lambda m: m.__name__)
HOUR = datetime(2026, 3, 2, 10, tzinfo=UTC)


def _example(model: type[BaseModel]) -> dict[str, object]:
    """The smallest valid instance's JSON (required fields filled by their type)."""
    state = {"alert_id": "a", "workflow_id": "w", "org_id": "acme", "compressor_id": "C",
             "site_id": "S", "rule_id": "r", "metric": "m", "value": 1.0, "threshold": 0.5,
             "severity": "warning", "breach_hour": HOUR.isoformat(),
             "opened_at": HOUR.isoformat()}
    breach = {k: state[k] for k in ("org_id", "compressor_id", "site_id", "rule_id", "metric",
                                     "value", "threshold", "severity")} | {"hour": state[
                                         "breach_hour"]}
    values: dict[str, object] = {
        "alert": state, "state": state, "breach": breach, "breaches": [breach],
        "clears": [], "org_id": "acme", "by": "jo", "request_id": "r1", "reason": "why",
        "step": "opened", "audience": "technicians", "event": "opened", "seq": 1,
        "event_type": "opened", "occurred_at": HOUR.isoformat(), "status": "opened",
        "hour": HOUR.isoformat(), "hours": [HOUR.isoformat()], "compressor_id": "C",
        "rule_id": "r", "metric": "m", "value": 1.0, "contact_id": "c", "role": "technician",
        "channel": "json", "run_id": "20260302T100000Z-1", "stage": "bronze",
        "held_by": "maintenance", "stopped_at": HOUR.isoformat(),
        **{k: v for k, v in state.items() if k not in ("value",)}}
    fields = model.model_fields
    data = {name: values[name] for name, f in fields.items() if f.is_required()}
    model.model_validate(data)  # the example itself is valid
    return data


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_a_newer_field_is_ignored_by_an_older_worker(model: type[BaseModel]) -> None:
    data = _example(model) | {"added_by_a_newer_version": {"any": ["thing"]}}
    payload = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(data).encode())
    [decoded] = pydantic_data_converter.payload_converter.from_payloads([payload], [model])
    assert isinstance(decoded, model)
    assert "added_by_a_newer_version" not in decoded.model_dump()


def test_a_breach_and_alert_from_before_stop_details_decode_without_one() -> None:
    for model in (payloads.Breach, payloads.AlertState):
        data = _example(model)
        payload = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(data).encode())
        [decoded] = pydantic_data_converter.payload_converter.from_payloads([payload], [model])
        assert decoded.stop is None
