"""What anyq takes from other libraries' private names, pinned: one test per adapter function.

An upgrade of Optuna, Hydra, OmegaConf or joblib that moves one of them fails here, by name,
instead of somewhere in a sweep.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import IntegerNode, OmegaConf
from optuna.storages import InMemoryStorage, RDBStorage
from optuna.trial import TrialState

from anyq.sweeping import hydra_private, optuna_private


def rdb(tmp_path, **heartbeat) -> RDBStorage:
    return RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}", **heartbeat)


# ------------------------------------------------------------------------------ Optuna
def test_study_storage_is_the_storage_the_study_and_its_trials_write_through(tmp_path):
    study = optuna.create_study(storage=rdb(tmp_path))
    trial = study.ask()
    storage = optuna_private.study_storage(study)
    assert storage is trial.storage  # Trial.storage is public: the same object
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    storage.set_trial_state_values(trial_id, TrialState.FAIL)
    assert study.get_trials(deepcopy=False)[0].state == TrialState.FAIL  # the study sees the write


def test_heartbeat_enabled_only_for_a_storage_given_an_interval(tmp_path):
    assert optuna_private.heartbeat_enabled(rdb(tmp_path, heartbeat_interval=5, grace_period=10))
    assert not optuna_private.heartbeat_enabled(rdb(tmp_path))
    assert not optuna_private.heartbeat_enabled(InMemoryStorage())
    study = optuna.create_study(storage=rdb(tmp_path, heartbeat_interval=5, grace_period=10))
    assert optuna_private.heartbeat_enabled(optuna_private.study_storage(study))  # through Optuna's cache


def test_stale_trial_ids_are_the_running_trials_whose_heartbeat_stopped(tmp_path):
    storage = rdb(tmp_path, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    beating, silent, never = study.ask(), study.ask(), study.ask()
    study_id = storage.get_study_id_from_name(study.study_name)
    ids = {t.number: storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
           for t in (beating, silent, never)}
    storage.record_heartbeat(ids[silent.number])
    storage.record_heartbeat(ids[beating.number])
    time.sleep(2.5)
    storage.record_heartbeat(ids[beating.number])
    # a trial that never beat is not stale: only a stopped heartbeat marks a dead worker
    assert optuna_private.stale_trial_ids(storage, study_id) == [ids[silent.number]]
    assert optuna_private.stale_trial_ids(InMemoryStorage(), 0) == []


# ------------------------------------------------------------------------------- Hydra
def test_job_error_is_the_stored_exception_without_a_stderr_line(capfd):
    error = ValueError("loss is nan")
    result = JobReturn(overrides=["seed=1"], status=JobStatus.FAILED)
    result.return_value = error  # the public setter
    assert hydra_private.job_error(result) is error
    assert capfd.readouterr().err == ""
    with pytest.raises(ValueError, match="loss is nan"):  # what the public getter does instead
        result.return_value  # noqa: B018
    done = JobReturn(status=JobStatus.COMPLETED)
    done.return_value = {"val/crps": 1.0}
    assert hydra_private.job_error(done) == {"val/crps": 1.0}


class _Elsewhere(Launcher):
    def setup(self, **kwargs): ...

    def launch(self, job_overrides, initial_job_idx): ...


def test_runs_in_process_only_for_hydras_basic_launcher():
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

    assert hydra_private.runs_in_process(BasicLauncher())
    assert not hydra_private.runs_in_process(JoblibLauncher())
    assert not hydra_private.runs_in_process(_Elsewhere())
    assert hydra_private.is_joblib_launcher(JoblibLauncher())
    assert not hydra_private.is_joblib_launcher(BasicLauncher())


def test_stop_joblib_workers_kills_the_reusable_executors_processes():
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=1)
    pid = executor.submit(os.getpid).result(timeout=60)
    hydra_private.stop_joblib_workers()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"joblib worker {pid} still alive")
    hydra_private.stop_joblib_workers()  # nothing left to stop: harmless


@dataclass
class _Schema:
    epochs: int = 3
    steps: Optional[int] = None


def test_config_node_is_the_typed_node_even_for_a_none_value():
    cfg = OmegaConf.structured(_Schema)
    assert isinstance(hydra_private.config_node(cfg, "epochs"), IntegerNode)
    node = hydra_private.config_node(cfg, "steps")
    assert isinstance(node, IntegerNode) and cfg.steps is None


def test_command_line_reads_flags_and_overrides_as_hydra_main_does(capsys):
    args = hydra_private.command_line(["-m", "--cfg", "job", "seed=0,1", "model=nbeats_aq", "-cd", "/x"])
    assert args.multirun and args.cfg == "job" and args.config_dir == "/x"
    assert args.overrides == ["seed=0,1", "model=nbeats_aq"]
    assert not (args.help or args.hydra_help or args.shell_completion or args.config_path or args.config_name)
    assert hydra_private.command_line(["--no-such-flag", "seed=1"]) is None  # left to Hydra to refuse
    assert hydra_private.command_line(["-cd"]) is None
    assert capsys.readouterr().err == ""  # nothing printed: Hydra prints its own usage error
