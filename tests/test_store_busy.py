"""Closing a run survives a store that is briefly locked by another writer (SQLite)."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient

from anyq.tracking.runs import RunRecord, while_store_busy


def flaky(failures: int, code: int):
    calls = []

    def write() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise MlflowException("(sqlite3.OperationalError) database is locked", error_code=code)
        return "written"
    return write, calls


def test_a_busy_store_is_retried_until_the_write_goes_through():
    write, calls = flaky(2, TEMPORARILY_UNAVAILABLE)
    assert while_store_busy(write, attempts=5, pause_s=0.0) == "written"
    assert len(calls) == 3


def test_a_store_busy_for_every_attempt_raises_after_the_last():
    write, calls = flaky(10, TEMPORARILY_UNAVAILABLE)
    with pytest.raises(MlflowException, match="database is locked"):
        while_store_busy(write, attempts=3, pause_s=0.0)
    assert len(calls) == 3


def test_other_store_errors_are_not_retried():
    write, calls = flaky(1, INVALID_PARAMETER_VALUE)
    with pytest.raises(MlflowException):
        while_store_busy(write, attempts=5, pause_s=0.0)
    assert len(calls) == 1


def test_a_write_waits_for_another_writers_lock_on_a_real_store_then_goes_through(tmp_path):
    path = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{path}")
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("begin exclusive")  # another process's write transaction
    errors: list[BaseException] = []

    def write() -> None:
        try:
            RunRecord(client, run_id).log_metrics({"val/crps": 1.5})
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)
    writer = threading.Thread(target=write)
    writer.start()
    writer.join(timeout=1.0)
    assert writer.is_alive()  # waiting on the lock, not failed
    holder.execute("commit")
    writer.join(timeout=60)
    assert not writer.is_alive() and errors == []
    assert client.get_run(run_id).data.metrics["val/crps"] == 1.5
