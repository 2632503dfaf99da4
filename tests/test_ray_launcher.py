"""hydra/launcher=anyq_ray against a real local Ray head on loopback (2 CPUs).

The module's fixture starts ``ray start --head --block`` on a free 127.0.0.1 port in its own
session and ends that session afterwards. Skipped, with the reason, when Ray is not
installed (``make env-scale-out`` installs it; CI does).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from scale_helpers import (
    clean_env,
    free_port,
    running_trials,
    start_sweep,
    study_runs,
    study_trials,
    sweep_cmd,
    trial_finished_in_mlflow,
    wait_for,
)

pytest.importorskip("ray", reason="Ray is not installed: `make env-scale-out` installs the Ray launcher's pins")
pytestmark = pytest.mark.integration
RAY = Path(sys.executable).parent / "ray"
TIMEOUT = 420
# Ray's fixed default ports, moved to free ones so that two heads on one machine never clash
# (Ray binds every interface; it resolves 127.0.0.1 to the machine's address on purpose)
FIXED_PORTS = ("ray-client-server", "dashboard-agent-listen", "dashboard-agent-grpc", "runtime-env-agent",
               "metrics-export", "node-manager", "object-manager")


def wait_for_node(address: str, timeout: float) -> None:
    """Until the head's raylet has registered (GCS up is not enough for a resource check)."""
    probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False); "
             "sys.exit(0 if any(n['Alive'] for n in ray.nodes()) else 1)")
    wait_for(lambda: subprocess.run([sys.executable, "-c", probe, address], capture_output=True,
                                    env=clean_env()).returncode == 0,
             None, timeout, f"a live Ray node at {address}", every_s=1)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp = Path(tempfile.mkdtemp(prefix="anyq-ray-"))  # short: Ray's socket paths must fit 107 bytes
    log = open(temp / "head.log", "wb")
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp}", *(f"--{name}-port={free_port()}" for name in FIXED_PORTS)],
        stdout=log, stderr=subprocess.STDOUT, env=clean_env(RAY_USAGE_STATS_ENABLED="0"),
        start_new_session=True)
    try:
        wait_for_node(address, 120)
        yield address
    finally:
        # SIGTERM to `ray start` alone: it stops its own processes in about 2 s. Sent to the
        # whole group, the children die first and the leader waits 30 s on them before exiting.
        head.terminate()
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # whatever is left of the session
        except ProcessLookupError:
            pass
        head.wait(timeout=30)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def ray_sweep(root: Path, address: str, *extra: str) -> list[str]:
    return ["hydra/launcher=anyq_ray", f"hydra.launcher.address={address}", "trainer.num_threads=1",
            "hydra.sweeper.heartbeat_interval=1", *extra]


def wait(proc: subprocess.Popen, root: Path) -> int:
    try:
        return proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("sweep did not finish:\n" + (root / "sweep.log").read_text()[-4000:])


def test_four_trials_as_ray_tasks_under_one_parent(ray_head, tmp_path):
    proc = start_sweep(tmp_path, *ray_sweep(tmp_path, ray_head, "hydra.sweeper.n_trials=4",
                                            "hydra.sweeper.n_jobs=2", "trainer.max_epochs=2"))
    assert wait(proc, tmp_path) == 0, (tmp_path / "sweep.log").read_text()[-4000:]
    log = (tmp_path / "sweep.log").read_text()
    assert log.count("Ray task #") == 4  # every trial went to the cluster, one task each

    trials = study_trials(tmp_path)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4  # 4 distinct trials
    parent, kids, everything = study_runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert sorted(int(k.data.tags["optuna.trial_number"]) for k in kids) == [0, 1, 2, 3]
    assert all(trial_finished_in_mlflow(k) for k in kids)
    assert [r.info.run_id for r in everything if r.info.status == "RUNNING"] == []


def ray_trial_pids() -> list[int]:
    """Ray names a worker's process after the task it runs."""
    out = subprocess.run(["pgrep", "-f", "^ray::anyq_trial"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_killed_ray_worker_fails_its_trial_and_anyq_retries_it_once(ray_head, tmp_path):
    epochs = 6
    proc = start_sweep(tmp_path, *ray_sweep(tmp_path, ray_head, "hydra.sweeper.n_trials=2",
                                            f"trainer.max_epochs={epochs}", "hydra.sweeper.pruner=null"))

    def kill_a_trial_mid_training() -> Optional[tuple[int]]:
        pids = ray_trial_pids()
        for t in running_trials(tmp_path):
            if 1 <= len(t.intermediate_values) <= epochs - 3 and len(pids) == 1:
                os.kill(pids[0], signal.SIGKILL)
                return (t.number,)  # a tuple: trial 0 is found too
        return None

    (victim,) = wait_for(kill_a_trial_mid_training, proc, TIMEOUT, "a trial mid-training", every_s=0.3)
    assert wait(proc, tmp_path) == 0, (tmp_path / "sweep.log").read_text()[-4000:]

    trials = {t.number: t for t in study_trials(tmp_path)}
    killed = trials[victim]
    assert killed.state == TrialState.FAIL
    assert killed.user_attrs["fail_reason"].startswith("worker lost: WorkerCrashedError")
    retries = [t for t in trials.values() if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == victim]
    assert len(retries) == 1 and retries[0].params == killed.params  # once, same parameters
    assert retries[0].state == TrialState.COMPLETE
    counted = [t for t in trials.values() if t.number != victim]
    assert len(counted) == 2 and all(t.state == TrialState.COMPLETE for t in counted)

    _, kids, everything = study_runs(tmp_path)
    by_number: dict[int, list] = {}
    for k in kids:
        by_number.setdefault(int(k.data.tags["optuna.trial_number"]), []).append(k)
    assert len(by_number[victim]) == 1  # Ray did not run the killed task again
    lost = by_number[victim][0]
    assert lost.info.status == "KILLED" and lost.data.tags["trial_state"] == "FAIL"
    assert sorted(by_number) == sorted(trials)
    assert [r.info.run_id for r in everything if r.info.status == "RUNNING"] == []


def test_request_no_node_can_meet_is_one_line_and_exit_2(ray_head, tmp_path):
    done = subprocess.run(sweep_cmd(tmp_path, "hydra/launcher=anyq_ray", f"hydra.launcher.address={ray_head}",
                                    "trainer.num_threads=4", "hydra.sweeper.n_trials=2"),
                          env=clean_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines == ["anyq-train: error: no Ray node can run a trial asking for 4 CPU and 0 GPU (1 live node(s), "
                     "the largest has 2 CPU and 0 GPU): lower trainer.num_threads (or "
                     "hydra.launcher.num_cpus/num_gpus), or add a node"]
    assert not (tmp_path / "mlruns" / "optuna.db").exists()  # refused before the study was touched
