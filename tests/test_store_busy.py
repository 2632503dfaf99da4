"""Closing a run survives a store that is briefly locked by another writer (SQLite)."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

from anyq.tracking.runs import while_store_busy


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
