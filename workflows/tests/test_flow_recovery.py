"""The sweeper and a flow run whose task died between recording a step and deciding what follows.

In process (``engine.run_step``, what the Celery task calls) against an isolated broker: the state a
SIGKILL leaves between the two commits is written as the engine leaves it, then the sweeper runs.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from testing.network import Reply
from testing.worker import IsolatedBroker, is_filesystem_broker
from workflows.execution import dispatch, engine, inflight
from workflows.execution.inflight import InFlight
from workflows.models import Run, StepIteration, StepRun
from workflows.services import run_accept
from workflows.tests.test_flow_statements import loop_workflow

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_lost_fan_in_is_recovered_while_a_sibling_iteration_is_still_pending(org, single_tenant, http_server):
    """Seen in the chaos flow plan: an iteration's step recorded, its worker killed before the iteration
    was counted. The sweeper re-sent the other iteration's step but counted the lost one only once
    nothing else was pending -- the run ended ~20 s late, through a second sweep."""
    http_server.route("POST", "/line", Reply(200, {"ok": True}))
    wf = loop_workflow(org, http_server.url + "/line", parallel=2)
    with IsolatedBroker() as broker:
        run, _ = run_accept(workflow=wf, trigger="manual", payload={"items": [1, 2]})
        engine.run_step(run.pk, 0, message_id="loop")  # iterations 0 and 1 start
        first = StepRun.objects.get(run=run, path="lines[0]/post")
        engine.run_step(run.pk, first.position, message_id="m0")
        loop = StepRun.objects.get(run=run, key="lines")
        assert StepIteration.objects.get(loop=loop, index=0).status == "succeeded"
        # What the kill between the step's commit and the fan-in's leaves: the step succeeded, its
        # iteration still running and not counted.
        StepIteration.objects.filter(loop=loop, index=0).update(status="running", output=None, finished_at=None)
        StepRun.objects.filter(pk=loop.pk).update(loop_finished=0)
        broker.flush()  # and the other iteration's message lost with the broker
        Run.objects.filter(pk=run.pk).update(last_progress_at=timezone.now() - timedelta(seconds=60))

        assert dispatch.recover_stalled_runs(stalled_after=20) == [str(run.pk)]
        # Iteration 0 counted by the sweep, iteration 1's step sent again.
        assert StepIteration.objects.get(loop=loop, index=0).status == "succeeded"
        assert StepRun.objects.get(pk=loop.pk).loop_finished == 1
        assert broker.message_count() == 1

        second = StepRun.objects.get(run=run, path="lines[1]/post")
        engine.run_step(run.pk, second.position, message_id="m1")  # the re-sent message, run here
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    loop.refresh_from_db()
    assert (loop.loop_finished, loop.status) == (2, "succeeded")
    assert len(http_server.requests) == 2  # each item's effect once


def test_an_iterations_lost_message_is_resent_while_the_other_iterations_go_on(org, single_tenant, http_server):
    """Seen in the chaos flow plan: a broker flush lost one iteration's message; the other iterations kept
    moving the run's last_progress_at, so the sweeper never saw the run as stalled and the lost item ran
    only once every other item was done (35 s later there; a 1,000-item loop would hold the slot for hours).
    Redis only: the sweeper must see the message is gone (other brokers: the run-level pass, by age)."""
    if is_filesystem_broker():
        pytest.skip("looks into the broker's queues: Redis only")
    http_server.route("POST", "/line", Reply(200, {"ok": True}))
    wf = loop_workflow(org, http_server.url + "/line", parallel=2)
    with IsolatedBroker() as broker:
        run, _ = run_accept(workflow=wf, trigger="manual", payload={"items": [1, 2, 3]})
        engine.run_step(run.pk, 0, message_id="loop")  # iterations 0 and 1 start
        broker.flush()  # both iterations' messages lost
        first = StepRun.objects.get(run=run, path="lines[0]/post")
        engine.run_step(run.pk, first.position, message_id="m0")  # iteration 0 goes on (recovered), 2 starts
        loop = StepRun.objects.get(run=run, key="lines")
        lost = StepRun.objects.get(run=run, path="lines[1]/post")
        third = StepRun.objects.get(run=run, path="lines[2]/post")
        assert broker.message_count() == 1  # iteration 2's
        StepIteration.objects.filter(loop=loop, index=1).update(started_at=timezone.now() - timedelta(seconds=10))
        assert Run.objects.get(pk=run.pk).last_progress_at > timezone.now() - timedelta(seconds=5)  # not stalled

        assert dispatch.recover_stalled_runs(stalled_after=20, lost_after=5) == [str(run.pk)]
        queued = sorted(step[1] for step in inflight.in_flight().queued_steps)
        assert queued == sorted([lost.position, third.position])  # the lost one again, the queued one once
        assert dispatch.recover_stalled_runs(stalled_after=20, lost_after=5) == []  # queued now: not twice

        engine.run_step(run.pk, lost.position, message_id="m1")
        engine.run_step(run.pk, third.position, message_id="m2")
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert len(http_server.requests) == 3


def test_which_chain_the_sweeper_counts_as_lost():
    """``dispatch._chain_is_lost``, each way out: what the two tests above do not reach."""
    now = timezone.now()
    run_id = "00000000-0000-0000-0000-000000000001"
    flight = InFlight(
        queued_steps={(run_id, 1)},
        held_steps={(run_id, 2): now.timestamp() - 3, (run_id, 3): now.timestamp() - 60},
    )
    assert flight.queued == {run_id} and flight.held == {run_id: now.timestamp() - 3}  # by run, the latest hold

    def lost(position, status="pending", next_attempt_at=None):
        row = StepRun(position=position, status=status, next_attempt_at=next_attempt_at)
        return dispatch._chain_is_lost(flight, run_id, row, now - timedelta(seconds=20))

    assert not lost(9, "running")  # its lease decides
    assert not lost(9, "retrying", now)  # its countdown message is held until it is due
    assert lost(9, "retrying", now - timedelta(seconds=60))  # long overdue and nowhere
    assert not lost(1)  # queued
    assert not lost(2)  # held 3 s ago
    assert lost(3)  # held 60 s ago by a worker that never started it: gone
    assert lost(4)  # nowhere
