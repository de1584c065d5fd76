"""The hourly pipeline against the real rule engine: breaches become alert workflows, and the
same hour evaluated twice duplicates nothing (alert_history, alert_events, notify calls)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from altaviz.core.payloads import AlertState, PipelineInput, PipelineResult
from altaviz.core.policy import OrgPolicy, PolicyFile
from altaviz.core.settings import Settings
from tests.workflows.conftest import GRACEFUL, HOUR0, Rig, hours
from worker import build_worker, rules_evaluator
from workflows.alert import QUERY_STATE
from workflows.pipeline import PipelineWorkflow, hour_to_evaluate

METRIC = "discharge_temp_max_f"   # rule discharge_temp_high: warning 330, critical 350


def load_hours(rig: Rig, compressor: str, values: list[float], last_hour=HOUR0) -> None:
    """Hourly aggregates of the discharge temperature ending at ``last_hour``, with the unit
    running at 95 % of its rated speed (the rules judge only running hours)."""
    org = "acme" if compressor in ("COMP-0001", "COMP-0002") else "bravo"
    rpm = {"COMP-0001": 1400, "COMP-0002": 420, "COMP-0003": 1200, "COMP-0004": 1400}
    with rig.pool.connection() as conn:
        for i, v in enumerate(values):
            hour = last_hour - timedelta(hours=len(values) - 1 - i)
            speed = rpm[compressor] * 0.95
            for metric, value in ((METRIC, v), ("speed_rpm", speed)):
                # an upsert: the long view (migration 070) takes UPDATE and INSERT
                row = {"org": org, "comp": compressor, "metric": metric, "hour": hour,
                       "mean": value, "min": value - 1, "max": value + 1}
                key = ("org_id = %(org)s AND compressor_id = %(comp)s AND metric = %(metric)s "
                       "AND hour = %(hour)s")
                conn.execute("UPDATE sensor_readings_agg SET mean = %(mean)s, min = %(min)s, "
                             "max = %(max)s, min_4h = %(min)s WHERE " + key, row)
                conn.execute(
                    "INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, n, "
                    "mean, min, max, min_4h) SELECT %(org)s, %(comp)s, %(metric)s, %(hour)s, 6, "
                    "%(mean)s, %(min)s, %(max)s, %(min)s "
                    "WHERE NOT EXISTS (SELECT 1 FROM sensor_readings_agg WHERE " + key + ")", row)


def counts(rig: Rig) -> tuple[object, ...]:
    return (rig.rows("SELECT count(*) FROM alert_history")[0][0],
            rig.rows("SELECT count(*) FROM alert_events")[0][0],
            len(rig.notifier.calls))


async def run_pipeline(rig: Rig, hour=HOUR0) -> PipelineResult:
    return await rig.client.execute_workflow(
        PipelineWorkflow.run, PipelineInput(hour=hour, run_etl=False, reminder_minutes=0),
        id=f"pipeline-{uuid.uuid4().hex[:8]}", task_queue=rig.task_queue)


async def test_same_hour_twice_duplicates_nothing(rig: Rig):
    load_hours(rig, "COMP-0001", [300, 335, 340, 342])      # warning, firing 2 of 3
    load_hours(rig, "COMP-0003", [300, 352, 355, 360])      # critical (bravo)
    worker = build_worker(rig.client, task_queue=rig.task_queue, pool=rig.pool,
                          notify=rig.notifier.all(), evaluator=rules_evaluator(Settings()),
                          executor=ThreadPoolExecutor(4), **GRACEFUL)
    with rig.env.auto_time_skipping_disabled():
        async with worker:
            first = await run_pipeline(rig)
            await rig.env.sleep(hours(0.05))
            after_first = counts(rig)
            second = await run_pipeline(rig)
            await rig.env.sleep(hours(0.05))
            after_second = counts(rig)
            h = rig.client.get_workflow_handle("alert/acme/COMP-0001/discharge_temp_high")
            acme = await h.query(QUERY_STATE, result_type=AlertState)
            h = rig.client.get_workflow_handle("alert/bravo/COMP-0003/discharge_temp_high")
            bravo = await h.query(QUERY_STATE, result_type=AlertState)
            await rig.settle()
    assert first.organizations == 2 and first.alerts_signalled >= 2
    assert second.alerts_signalled == first.alerts_signalled
    assert after_first == after_second
    assert acme.severity == "warning" and acme.value == 342 and acme.rule_set_id is not None
    assert acme.rule_version == 1 and acme.breach_hour == HOUR0
    assert bravo.severity == "critical" and bravo.org_id == "bravo"
    temps = rig.rows("SELECT alert_id, severity FROM alert_history "
                     "WHERE rule_id = 'discharge_temp_high' ORDER BY alert_id")
    assert temps == [(acme.alert_id, "warning"), (bravo.alert_id, "critical")]
    opened = [c for c in rig.notifier.calls if c.step == "opened"]
    assert len(opened) == len({c.alert.alert_id for c in opened}) == after_first[0]


def test_scheduled_run_evaluates_the_hour_that_ended():
    from datetime import UTC, datetime

    assert hour_to_evaluate(datetime(2026, 3, 2, 11, 5, tzinfo=UTC)) == HOUR0


async def test_the_policy_sets_escalation_delay_and_reminder_cadence(rig: Rig):
    """An organization's escalate_after_hours and reminder_minutes reach the alerts the
    pipeline opens; another organization keeps the rule's 4 hours and the pipeline's cadence."""
    load_hours(rig, "COMP-0001", [300, 335, 340, 342])      # acme: warning
    load_hours(rig, "COMP-0004", [300, 335, 340, 342])      # bravo: warning
    policy = PolicyFile(organizations={"acme": OrgPolicy(escalate_after_hours=1,
                                                         reminder_minutes=20)})
    worker = build_worker(rig.client, task_queue=rig.task_queue, pool=rig.pool,
                          notify=rig.notifier.all(),
                          evaluator=rules_evaluator(Settings(), policy=policy),
                          executor=ThreadPoolExecutor(4), policy=policy, **GRACEFUL)
    async with worker:
        await run_pipeline(rig)
        await rig.env.sleep(hours(1.75))
        states = {}
        for org, comp in (("acme", "COMP-0001"), ("bravo", "COMP-0004")):
            h = rig.client.get_workflow_handle(f"alert/{org}/{comp}/discharge_temp_high")
            states[org] = await h.query(QUERY_STATE, result_type=AlertState)
        await rig.settle()
    acme, bravo = states["acme"], states["bravo"]
    assert acme.escalation_delay_hours == 1 and acme.severity == "critical"
    assert acme.escalated_at is not None
    assert abs((acme.escalated_at - acme.opened_at) - hours(1)) < hours(0.01)
    assert rig.notifier.steps(acme.alert_id) == ["opened", "escalated", "reminder-1",
                                                  "reminder-2"]
    assert bravo.severity == "warning" and bravo.escalation_delay_hours == 4
    assert rig.notifier.steps(bravo.alert_id) == ["opened"]
