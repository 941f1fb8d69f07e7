"""Flow runs whose machine died: Prefect marks them Crashed only from missed heartbeats.

A flow run's process sends a heartbeat event every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds. When the
runner (``flows/serve.py``) or a worker that started it is alive and sees the process die, it marks the run
Crashed itself. When the runner or worker dies with it (a lost machine, an evicted container, a killed
process group), nothing does: the run shows Running forever, and a schedule with a concurrency limit
stalls behind it. On a self-hosted server Prefect's answer is an automation (its "detect zombie flows"
recipe): after a heartbeat, expect another one or a final state within some time, else change the run's
state to Crashed. :func:`crash_silent_runs` installs it; ``flows/serve.py`` calls it with
``flows.heartbeat_s`` and ``flows.crash_after_s``.
"""

from __future__ import annotations

import os
from datetime import timedelta

AUTOMATION = "vt: crash flow runs whose heartbeats stopped"
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
FINAL = ("Completed", "Failed", "Cancelled", "Crashed")


def crash_silent_runs(heartbeat_s: int | None, crash_after_s: float | None) -> str:
    """Make this process's flow runs send heartbeats every ``heartbeat_s`` seconds (a value the user exported
    in ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` wins) and create, or update, the automation that marks a run
    Crashed after ``crash_after_s`` seconds without one. Needs ``PREFECT_API_URL``. Returns what it did."""
    if heartbeat_s is None or crash_after_s is None:
        return "no crash detection from heartbeats (flows.heartbeat_s / flows.crash_after_s is null)"
    os.environ.setdefault(HEARTBEAT_ENV, str(heartbeat_s))  # the served flow runs are child processes: inherited
    period = int(os.environ[HEARTBEAT_ENV])
    if crash_after_s <= period:
        raise ValueError(
            f"flows.crash_after_s ({crash_after_s:g}) must be longer than the heartbeat period ({period} s, "
            f"{HEARTBEAT_ENV}), or every healthy run is crashed between two heartbeats; 3 periods is usual"
        )
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    wanted = Automation(
        name=AUTOMATION,
        description="installed by vt-models flows/serve.py (flows.crash_after_s)",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{state}" for state in FINAL)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=crash_after_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {crash_after_s:g} s: the process running this flow run, "
                "or its machine, is gone (flows.crash_after_s)",
            )
        ],
    )
    try:
        existing = Automation.read(name=AUTOMATION)
    except ValueError:  # none yet
        wanted.create()
        return f"created automation {AUTOMATION!r}: heartbeats every {period} s, Crashed after {crash_after_s:g} s"
    existing.trigger, existing.actions, existing.enabled = wanted.trigger, wanted.actions, True
    existing.update()
    return f"updated automation {AUTOMATION!r}: heartbeats every {period} s, Crashed after {crash_after_s:g} s"
