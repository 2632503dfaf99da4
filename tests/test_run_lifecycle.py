"""One lifecycle for every run anyq opens (a job's, a study's parent): how its block ends
decides the status it is closed with, never RUNNING."""

from __future__ import annotations

import signal

import pytest
from mlflow.tracking import MlflowClient

from anyq.errors import Terminated
from anyq.tracking.runs import RunRecord, open_run, run_lifecycle


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[MlflowClient, str]:
    client = MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('lifecycle') / 'mlflow.db'}")
    return client, client.create_experiment("lifecycle")


def opened(store) -> tuple[MlflowClient, str]:
    client, experiment_id = store
    return client, client.create_run(experiment_id).info.run_id


def closed(client: MlflowClient, run_id: str) -> tuple[str, str | None]:
    run = client.get_run(run_id)
    return run.info.status, run.data.tags.get("error")


def test_a_block_that_ends_normally_closes_the_run_finished(store):
    client, run_id = opened(store)
    with run_lifecycle(client, run_id) as record:
        assert client.get_run(run_id).info.status == "RUNNING"
        record.log_metrics({"val/crps": 1.5})
    assert closed(client, run_id) == ("FINISHED", None)


def test_a_study_whose_work_failed_in_part_closes_failed_with_the_reason(store):
    client, run_id = opened(store)
    with run_lifecycle(client, run_id) as record:
        record.conclude("FAILED", "1 of 2 cells failed; cell seed=1: RuntimeError: diverged")
    assert closed(client, run_id) == ("FAILED", "1 of 2 cells failed; cell seed=1: RuntimeError: diverged")


def test_an_error_closes_the_run_failed_with_its_first_line_and_goes_on(store):
    client, run_id = opened(store)
    with pytest.raises(ValueError, match="bad window"):
        with run_lifecycle(client, run_id) as record:
            record.conclude("FINISHED")
            raise ValueError("bad window\nmore detail")
    assert closed(client, run_id) == ("FAILED", "ValueError: bad window")


@pytest.mark.parametrize("interrupt, error", [
    (Terminated(signal.SIGTERM), "Terminated: stopped by SIGTERM"),
    (Terminated(signal.SIGINT), "Terminated: stopped by SIGINT"),
    (KeyboardInterrupt(), "KeyboardInterrupt"),
])
def test_an_interruption_closes_the_run_killed(store, interrupt, error):
    client, run_id = opened(store)
    with pytest.raises(type(interrupt)):
        with run_lifecycle(client, run_id):
            raise interrupt
    assert closed(client, run_id) == ("KILLED", error)


def test_a_callers_status_for_an_exception_comes_first(store):
    client, run_id = opened(store)

    def pruned_is_killed(exc: BaseException):
        return ("KILLED", {"trial_state": "PRUNED"}) if isinstance(exc, LookupError) else None

    with pytest.raises(LookupError):
        with run_lifecycle(client, run_id, pruned_is_killed):
            raise LookupError("pruned at step 3")
    assert closed(client, run_id) == ("KILLED", "LookupError: pruned at step 3")
    assert client.get_run(run_id).data.tags["trial_state"] == "PRUNED"


def test_more_params_than_one_store_call_takes_are_all_recorded(store):
    """MLflow's client splits a batch into the store's limits (100 params, 1000 metrics a call)."""
    client, run_id = opened(store)
    record = RunRecord(client, run_id)
    record.log_params({f"p{i}": str(i) for i in range(250)})
    record.log_metrics({f"m{i}": float(i) for i in range(1200)})
    record.set_tags({f"t{i}": str(i) for i in range(150)})
    data = client.get_run(run_id).data
    assert len(data.params) == 250 and data.params["p249"] == "249"
    assert len(data.metrics) == 1200 and data.metrics["m1199"] == 1199.0
    assert {k: v for k, v in data.tags.items() if k.startswith("t")} == {f"t{i}": str(i) for i in range(150)}


def test_a_resumed_run_that_finishes_carries_no_error_of_the_segment_before(store):
    client, experiment_id = store
    with pytest.raises(Terminated):
        with open_run(client, experiment_id, run_name="r", tags={"task": "train"}) as record:
            run_id = record.run_id
            raise Terminated(signal.SIGTERM)
    assert closed(client, run_id) == ("KILLED", "Terminated: stopped by SIGTERM")
    with open_run(client, experiment_id, run_name="r", tags={"task": "train"}, resume_run_id=run_id):
        pass
    tags = client.get_run(run_id).data.tags
    assert closed(client, run_id) == ("FINISHED", None)
    assert tags["resume1.previous_error"] == "Terminated: stopped by SIGTERM" and tags["resumes"] == "1"


def test_a_run_closed_fine_after_a_failed_close_carries_no_old_error(store):
    client, run_id = opened(store)
    with run_lifecycle(client, run_id) as record:
        record.conclude("FAILED", "1 of 4 cells failed")
    assert closed(client, run_id) == ("FAILED", "1 of 4 cells failed")
    client.update_run(run_id, status="RUNNING")  # the study's rerun reopens its parent
    with run_lifecycle(client, run_id):
        pass  # every cell finished this time
    assert closed(client, run_id) == ("FINISHED", None)
