"""Scale-out: one study shared by worker processes through PostgreSQL and an MLflow server.

The integration tests start real servers with scripts/services.sh (what `make services`
runs) in a temporary directory on free loopback ports. PostgreSQL comes from the machine:
when its binaries are missing and the tests run as root with apt-get, Debian's
``postgresql`` is installed the way CI gets it; otherwise those tests are skipped.
Each worker gets its own ``paths.root``, as separate machines would: they share only the
two servers.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import optuna
import pytest
from filelock import FileLock
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from anyq.sweeping.engine import STALE_REASON
from anyq.sweeping.storage import STORAGE_ENV, driver_url, redacted, resolve_storage_url
from anyq.tracking.trial_runs import OPENED_BY_TRIAL_TAG, close_trial_runs, trial_key
from conftest import TINY
from scale_helpers import wait_for

REPO = Path(__file__).resolve().parents[1]
SERVICES_SH = REPO / "scripts" / "services.sh"
SPACE = [
    "hydra.sweeper.params=null",
    "model.attention.adaptive_temp=interval(0.0, 2.0)",
    "model.attention.n_heads=choice(1, 2)",
    "hydra.sweeper.sampler.n_startup_trials=2",
]
WORKER_TIMEOUT = 240


# ------------------------------------------------------------------------ servers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bindir() -> Optional[str]:
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return str(Path(shutil.which("pg_ctl")).resolve().parent)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return str(Path(found[-1]).parent) if found else None


def ensure_postgres() -> None:
    # `make test` runs test files in parallel (pytest-xdist): one worker installs, the others wait
    with FileLock(Path(tempfile.gettempdir()) / "anyq-postgres-install.lock"):
        if postgres_bindir():
            return
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("no PostgreSQL binaries (initdb, pg_ctl), and installing Debian's postgresql "
                        "needs root with apt-get")
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql",
                       shell=True, check=True, timeout=900)
        assert postgres_bindir(), "postgresql installed, but no initdb found"


@dataclass
class Services:
    directory: Path
    storage: str  # postgresql://anyq@127.0.0.1:<port>/anyq_optuna, no password in it
    tracking: str  # http://127.0.0.1:<port>
    pgpassfile: str


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    ensure_postgres()
    # not under pytest's tmp dir: as root the server runs as `postgres`, which must reach it
    directory = Path(tempfile.mkdtemp(prefix="anyq-services-"))
    directory.chmod(0o755)
    env = {**os.environ, "ANYQ_SERVICES_DIR": str(directory), "ANYQ_PG_PORT": str(free_port()),
           "ANYQ_MLFLOW_PORT": str(free_port()), "ANYQ_MLFLOW_WORKERS": "1"}
    try:
        started = subprocess.run(["bash", str(SERVICES_SH), "start"], env=env, capture_output=True,
                                 text=True, timeout=300)
        if started.returncode != 0:
            logs = "".join(f"\n--- {p}\n{p.read_text()[-3000:]}" for p in sorted(directory.glob("log/*.log")))
            pytest.fail(f"services.sh start failed: {started.stderr[-2000:]}{logs}")
        exported = dict(line.removeprefix("export ").split("=", 1)
                        for line in (directory / "env").read_text().splitlines())
        saved = os.environ.get("PGPASSFILE")
        os.environ["PGPASSFILE"] = exported["PGPASSFILE"]  # this process reads the study too
        yield Services(directory, exported[STORAGE_ENV], exported["MLFLOW_TRACKING_URI"],
                       exported["PGPASSFILE"])
        if saved is None:
            os.environ.pop("PGPASSFILE", None)
        else:
            os.environ["PGPASSFILE"] = saved
    finally:
        subprocess.run(["bash", str(SERVICES_SH), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


# ------------------------------------------------------------------------ workers
def worker_env(services: Services, *, via_env: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (STORAGE_ENV, "MLFLOW_TRACKING_URI")}
    env.update(PYTHONWARNINGS="ignore", PGPASSFILE=services.pgpassfile)
    if via_env:
        env.update({STORAGE_ENV: services.storage, "MLFLOW_TRACKING_URI": services.tracking})
    return env


def start_worker(root: Path, study: str, env: dict[str, str], *extra: str) -> subprocess.Popen:
    """``anyq-train -m`` as a user would type it on each machine (own root, own log)."""
    root.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "anyq.app.train", "-m", "sweep=adaptive_attention", *TINY, *SPACE,
           f"hydra.sweeper.study_name={study}", "trainer.num_threads=1", f"paths.root={root}", *extra]
    log = open(root / "worker.log", "wb")  # a file, not a pipe: a full pipe would block the worker
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    log.close()
    return proc


def wait_ok(procs: dict[Path, subprocess.Popen]) -> None:
    for root, proc in procs.items():
        try:
            proc.wait(timeout=WORKER_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, (root / "worker.log").read_text()[-4000:]


def study_trials(services: Services, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=driver_url(services.storage)).get_trials()


def study_runs(services: Services, name: str):
    """The study's parent run, its children, and every run of the experiment."""
    client = MlflowClient(services.tracking)
    experiment = client.get_experiment_by_name(name)
    everything = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in everything if r.data.tags.get("role") == "study"]
    assert len(parents) == 1
    kids = [r for r in everything if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == parents[0].info.run_id]
    return client, experiment, parents[0], kids, everything


def trial_finished_in_mlflow(run) -> bool:
    return run.info.status == "FINISHED" or (
        run.info.status == "KILLED" and run.data.tags.get("trial_state") == "PRUNED")


# -------------------------------------------------------------------- integration
@pytest.mark.integration
def test_three_workers_share_one_study_and_log_through_the_server(services, tmp_path):
    n_trials = 6
    env = worker_env(services, via_env=True)  # the same command everywhere: the servers come from env
    procs = {tmp_path / f"machine{i}": start_worker(tmp_path / f"machine{i}", "shared", env,
                                                      f"hydra.sweeper.n_trials={n_trials}",
                                                      "trainer.max_epochs=2")
             for i in range(3)}
    wait_ok(procs)

    trials = study_trials(services, "shared")
    assert sorted(t.number for t in trials) == list(range(n_trials))  # no overshoot, no gap
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 2

    client, experiment, parent, kids, everything = study_runs(services, "shared")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna.storage"] == services.storage
    assert sorted(int(k.data.tags["optuna.trial_number"]) for k in kids) == list(range(n_trials))
    assert all(trial_finished_in_mlflow(k) for k in kids)
    assert [r.info.run_id for r in everything if r.info.status == "RUNNING"] == []
    done = [k for k in kids if k.info.status == "FINISHED"]
    assert all("delta/crps_vs_baseline" in k.data.metrics for k in done)  # one baseline, shared

    # artifacts went through the server into its --artifacts-destination, none to a worker's disk
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    run = done[0]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    listed = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/test_forecasts.npz" in listed
    stored = services.directory / "artifacts" / experiment.experiment_id / run.info.run_id / "artifacts"
    assert (stored / "evaluation" / "test_forecasts.npz").is_file()
    local = client.download_artifacts(run.info.run_id, "evaluation/test_forecasts.npz", str(tmp_path))
    with np.load(local) as npz:
        assert npz["forecast"].shape[-1] == npz["levels"].shape[0] == 39
    for root in procs:
        assert not (root / "mlruns" / "artifacts").exists()
        assert not (root / "mlruns" / "optuna.db").exists()


@pytest.mark.integration
def test_sigkilled_worker_trial_fails_is_retried_and_its_run_is_closed(services, tmp_path):
    n_trials, epochs = 3, 5
    env = worker_env(services, via_env=False)  # this time the servers come as overrides
    extra = [f"hydra.sweeper.storage='{services.storage}'", f"tracking.tracking_uri='{services.tracking}'",
             f"hydra.sweeper.n_trials={n_trials}", f"trainer.max_epochs={epochs}",
             "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
    roots = [tmp_path / f"machine{i}" for i in range(3)]
    procs = {root: start_worker(root, "killed", env, *extra) for root in roots}

    # kill the worker of a trial that is mid-training: an epoch reported, several to go
    storage = optuna.storages.RDBStorage(driver_url(services.storage))

    def kill_a_worker_mid_training() -> Optional[tuple[Path, int]]:
        try:
            trials = storage.get_all_trials(storage.get_study_id_from_name("killed"))
        except KeyError:
            return None
        for t in trials:
            if t.state == TrialState.RUNNING and 1 <= len(t.intermediate_values) <= epochs - 3:
                owner = [r for r in roots if (r / "multirun" / "killed" / f"trial-{t.number}").is_dir()]
                if owner and procs[owner[0]].poll() is None:
                    procs[owner[0]].send_signal(signal.SIGKILL)
                    return owner[0], t.number
        return None

    victim, killed_number = wait_for(kill_a_worker_mid_training, None, WORKER_TIMEOUT, "a trial mid-training")
    assert procs.pop(victim).wait(timeout=30) == -signal.SIGKILL
    wait_ok(procs)

    trials = {t.number: t for t in study_trials(services, "killed")}
    killed = trials[killed_number]
    assert killed.state == TrialState.FAIL
    retries = [t for t in trials.values() if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed_number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    counted = [t for t in trials.values() if t.number != killed_number]
    assert len(counted) == n_trials  # the lost trial does not count toward the total
    assert {t.state for t in counted} <= {TrialState.COMPLETE, TrialState.PRUNED}

    _, _, parent, kids, everything = study_runs(services, "killed")
    assert parent.info.status == "FINISHED"
    by_number = {int(k.data.tags["optuna.trial_number"]): k for k in kids}
    assert sorted(by_number) == sorted(trials)  # every trial, the lost one too, has its run
    lost = by_number[killed_number]
    assert lost.info.status == "KILLED"  # closed by a surviving worker
    assert lost.data.tags["error"] == STALE_REASON and lost.data.tags["trial_state"] == "FAIL"
    assert all(trial_finished_in_mlflow(by_number[t.number]) for t in counted)
    assert [r.info.run_id for r in everything if r.info.status == "RUNNING"] == []


# ---------------------------------------------------------------- no servers needed
def test_storage_precedence_override_then_env_then_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert resolve_storage_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/optuna.db"
    monkeypatch.setenv(STORAGE_ENV, "postgresql://anyq@db:5432/anyq_optuna")
    assert resolve_storage_url(None, tmp_path) == "postgresql://anyq@db:5432/anyq_optuna"
    assert resolve_storage_url("journal:///shared/study.log", tmp_path) == "journal:///shared/study.log"
    assert redacted("postgresql://anyq:s3cret@db:5432/x") == "postgresql://anyq:***@db:5432/x"
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; psycopg2 is what is installed
    assert driver_url("postgresql://anyq@db/x") == "postgresql+psycopg2://anyq@db/x"
    assert driver_url("postgresql+psycopg://anyq@db/x") == "postgresql+psycopg://anyq@db/x"


def test_close_trial_runs_closes_every_run_of_that_trial_and_only_those(tmp_path):
    study = "o'brien"  # a quote in the name: MLflow's filter strings have no escapes
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("s", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(exp, tags={"role": "study"}).info.run_id
    other_parent = client.create_run(exp).info.run_id

    def child(number: int, under: str, status: str = "RUNNING", **tags: str) -> str:
        run_id = client.create_run(exp, tags={MLFLOW_PARENT_RUN_ID: under, "optuna.study_name": study,
                                              "optuna.trial_number": str(number), **tags}).info.run_id
        if status != "RUNNING":
            client.set_terminated(run_id, status=status)
        return run_id

    def baseline(number: int, status: str = "RUNNING") -> str:  # no parent, no trial tags: not a trial
        run_id = client.create_run(exp, tags={"role": "baseline",
                                              OPENED_BY_TRIAL_TAG: trial_key(parent, number)}).info.run_id
        if status != "RUNNING":
            client.set_terminated(run_id, status=status)
        return run_id

    lost, finished, failed = child(1, parent), child(1, parent, "FINISHED"), child(1, parent, "FAILED", error="X")
    other_trial, other_study = child(2, parent), child(1, other_parent)
    training, trained, others = baseline(1), baseline(1, "FINISHED"), baseline(2)
    assert sorted(close_trial_runs(client, parent, study, 1, "worker stopped")) == \
        sorted([lost, finished, failed, training])
    for run_id in (lost, finished, training):  # a finished job whose trial Optuna failed: KILLED too
        assert client.get_run(run_id).info.status == "KILLED"
        assert client.get_run(run_id).data.tags["error"] == "worker stopped"
    assert [client.get_run(r).data.tags["trial_state"] for r in (lost, finished, failed)] == ["FAIL"] * 3
    assert client.get_run(failed).info.status == "FAILED" and client.get_run(failed).data.tags["error"] == "X"
    assert "trial_state" not in client.get_run(training).data.tags  # a baseline is not a trial
    assert client.get_run(trained).info.status == "FINISHED"  # a finished baseline stays valid
    for run_id in (other_trial, other_study, others):
        assert client.get_run(run_id).info.status == "RUNNING"
    assert close_trial_runs(client, parent, study, 1, "again") == []  # a second notice is harmless


@pytest.mark.slow
def test_joblib_launcher_runs_a_batch_of_trials_in_parallel(tmp_path):
    cmd = [sys.executable, "-m", "anyq.app.train", "-m", "sweep=adaptive_attention", *TINY, *SPACE,
           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
           "hydra.sweeper.n_trials=2", "trainer.max_epochs=2", "trainer.num_threads=1",
           f"paths.root={tmp_path}"]
    env = {k: v for k, v in os.environ.items() if k not in (STORAGE_ENV, "MLFLOW_TRACKING_URI")}
    done = subprocess.run(cmd, env={**env, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    trials = optuna.load_study(study_name="adaptive_attention",
                               storage=f"sqlite:///{tmp_path}/mlruns/optuna.db").get_trials()
    assert sorted(t.number for t in trials) == [0, 1]
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("adaptive_attention")
    kids = {int(r.data.tags["optuna.trial_number"]): r
            for r in client.search_runs([exp.experiment_id], "tags.`optuna.trial_number` != ''")}
    assert sorted(kids) == [0, 1] and all(trial_finished_in_mlflow(k) for k in kids.values())
    # one batch of two: both trials were asked (and handed to the two workers) before either
    # was told; MLflow's own start/end times depend on how fast each worker process starts
    first, second = sorted(trials, key=lambda t: t.number)
    assert max(first.datetime_start, second.datetime_start) < min(first.datetime_complete,
                                                                   second.datetime_complete)
