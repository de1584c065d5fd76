"""Temporal workflows: deterministic orchestration only (no I/O, no wall clock, no randomness).

This ``__init__`` holds only side-effect-free constants shared by the worker, the clients and
the embedded dev server's start-up (which registers the search attributes).
"""

#: The task queue every Altaviz worker polls.
TASK_QUEUE = "altaviz"

#: Custom search attributes for alert workflows, registered on whichever Temporal server is
#: used (``--search-attribute`` on the embedded dev server, the operator service otherwise),
#: so that supervisors can filter alerts in the Web UI and with ``temporal workflow list``.
SEARCH_ATTRIBUTES: dict[str, str] = {
    "AltavizOrg": "Keyword",
    "AltavizCompressor": "Keyword",
    "AltavizSite": "Keyword",
    "AltavizSeverity": "Keyword",
    "AltavizState": "Keyword",
    "AltavizRule": "Keyword",
    "AltavizAlertId": "Keyword",
}

#: Id of the Temporal Schedule that runs the hourly pipeline.
PIPELINE_SCHEDULE_ID = "altaviz-hourly-pipeline"

#: Id of the Temporal Schedule that reconciles open alerts with running alert workflows.
RECONCILE_SCHEDULE_ID = "altaviz-alert-reconciler"
