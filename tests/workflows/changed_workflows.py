"""Two edited copies of ``AlertWorkflow`` for the replay test: the same change (one more
activity before each timer's transition) without and with ``workflow.patched``.

Kept in their own module, which imports nothing but the workflow, because the workflow sandbox
re-imports the module that defines a workflow.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from altaviz.core.payloads import AlertInput, AlertState
    from workflows.alert import AlertWorkflow


class _Changed(AlertWorkflow):
    use_patch = False

    async def _fire(self, kind: str) -> None:
        if not self.use_patch or workflow.patched("extra-audit-step"):
            await workflow.execute_local_activity("record_transition", self._transition(
                "reminder", actor="x", details={}),
                start_to_close_timeout=timedelta(seconds=5))
        await super()._fire(kind)


@workflow.defn(name="AlertWorkflow")
class UnpatchedChange(_Changed):
    """The change as a careless edit would make it."""

    @workflow.run
    async def run(self, inp: AlertInput) -> AlertState:
        return await super().run(inp)


@workflow.defn(name="AlertWorkflow")
class PatchedChange(_Changed):
    """The same change behind ``workflow.patched``: old histories replay unchanged."""

    use_patch = True

    @workflow.run
    async def run(self, inp: AlertInput) -> AlertState:
        return await super().run(inp)
