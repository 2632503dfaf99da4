"""A signal never interrupts a database call: it is raised once the call has committed."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from anyq.app.signals import Terminated, exit_on_signals, inside_database_call


def test_a_sigterm_inside_a_store_write_is_raised_after_the_write_commits(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    writer, other = MlflowClient(uri), MlflowClient(uri)
    run_id = writer.create_run(writer.create_experiment("e")).info.run_id
    sent: list[str] = []

    def send_after_insert(frame, event, arg):
        # the INSERT has run, so SQLite holds the write lock, and the commit has not
        if (event == "return" and frame.f_code.co_name == "do_execute" and not sent
                and str(frame.f_locals.get("statement", "")).lstrip().upper().startswith("INSERT")):
            sent.append(frame.f_globals["__name__"])
            os.kill(os.getpid(), signal.SIGTERM)
        return send_after_insert

    with pytest.raises(Terminated) as stopped:
        with exit_on_signals():
            sys.settrace(send_after_insert)
            try:
                writer.log_batch(run_id, metrics=[Metric("crps", 1.5, 0, 0)])
            finally:
                sys.settrace(None)
            time.sleep(2)  # the deferred signal is raised here, outside the store
    assert sent and sent[0].startswith("sqlalchemy")
    assert stopped.value.code == 143
    assert [m.value for m in other.get_metric_history(run_id, "crps")] == [1.5]  # the write committed
    other.set_terminated(run_id, "KILLED")  # and released the lock: closing the run does not wait
    assert other.get_run(run_id).info.status == "KILLED"


def test_database_frames_are_recognised_by_module():
    frame = sys._getframe()
    assert not inside_database_call(frame)
    namespace = {"__name__": "sqlalchemy.engine.base", "sys": sys}
    exec("def probe():\n    return sys._getframe()", namespace)
    assert inside_database_call(namespace["probe"]())
    namespace["__name__"] = "sqlalchemy_utils"  # a prefix of the name is not the module
    exec("def probe():\n    return sys._getframe()", namespace)
    assert not inside_database_call(namespace["probe"]())


def test_a_sigterm_inside_a_store_write_during_fit_stops_at_lightnings_next_boundary(tmp_path):
    """During a Trainer run Lightning's SIGTERM handler runs first and this one after it
    (the module it is called from is pinned here); deferred out of the write, the signal
    ends the block as Terminated (143) through Lightning's SIGTERMException."""
    import pytorch_lightning as pl
    import torch

    from anyq.app.signals import LIGHTNING_SIGNALS

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    writer, other = MlflowClient(uri), MlflowClient(uri)
    run_id = writer.create_run(writer.create_experiment("e")).info.run_id
    callers: list[str] = []
    steps: list[int] = []

    class Writes(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            steps.append(batch_idx)
            if batch_idx == 1:
                callers.append(type(signal.getsignal(signal.SIGTERM)).__module__)
                sys.settrace(send_after_insert)
                try:
                    writer.log_batch(run_id, metrics=[Metric("crps", 1.5, 0, 0)])
                finally:
                    sys.settrace(None)
            return (self.w - batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    sent: list[bool] = []

    def send_after_insert(frame, event, arg):
        if (event == "return" and frame.f_code.co_name == "do_execute" and not sent
                and str(frame.f_locals.get("statement", "")).lstrip().upper().startswith("INSERT")):
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return send_after_insert

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(64, 1)), batch_size=1)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with pytest.raises(Terminated) as stopped:
        with exit_on_signals():
            trainer.fit(Writes(), data)
    assert callers == [LIGHTNING_SIGNALS] and sent
    assert stopped.value.code == 143
    assert len(steps) < 64  # stopped at the next boundary, not at the end of the epoch
    assert [m.value for m in other.get_metric_history(run_id, "crps")] == [1.5]
    other.set_terminated(run_id, "KILLED")
    assert other.get_run(run_id).info.status == "KILLED"
