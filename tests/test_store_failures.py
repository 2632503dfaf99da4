"""A store or disk that cannot be written ends ``anyq-train`` with one line, exit 74, and no run
left RUNNING once it can be written again; checkpoints written before stay usable.

The failures are real: a small file system filled up (tmpfs), a store made read-only by a
read-only bind mount, ``/dev/full``'s ENOSPC, SQLite opened read-only, a process killed
with its run open. Mounting needs root: those tests skip without it.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient

from anyq.app.train import EXIT_STORE_UNWRITABLE
from anyq.errors import StoreUnwritable
from anyq.tracking.orphans import ORPHAN_REASON, close_orphaned_runs, hold_run
from anyq.tracking.runs import open_run, while_store_busy
from anyq.tracking.store import unwritable_reason
from conftest import TINY
from scale_helpers import REPO, clean_env, wait_for

DEADLINE_S = 240


# ------------------------------------------------------------------ real failures, classified
def dev_full_error() -> OSError:
    """A real ENOSPC: ``/dev/full`` refuses every write."""
    try:
        with open("/dev/full", "w") as full:
            full.write("x")
            full.flush()
    except OSError as exc:
        return exc
    raise AssertionError("/dev/full accepted a write")


def readonly_sqlite_error(tmp_path: Path) -> sqlite3.OperationalError:
    path = tmp_path / "store.db"
    sqlite3.connect(path).execute("create table t (x)").connection.commit()
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        ro.execute("insert into t values (1)")
    except sqlite3.OperationalError as exc:
        return exc
    raise AssertionError("a read-only SQLite connection accepted a write")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_enospc_is_unwritable_and_is_not_retried_as_busy():
    error = dev_full_error()
    assert unwritable_reason(error) == "[Errno 28] No space left on device"
    calls = []

    def write():
        calls.append(1)
        raise error
    with pytest.raises(StoreUnwritable) as raised:
        while_store_busy(write, attempts=5, pause_s=0.0)
    assert len(calls) == 1 and raised.value.__cause__ is error


def test_sqlite_readonly_through_mlflow_is_unwritable_though_mlflow_says_temporarily_unavailable(tmp_path):
    cause = readonly_sqlite_error(tmp_path)
    assert "attempt to write a readonly database" in str(cause)
    # MLflow raises every SQLite OperationalError as TEMPORARILY_UNAVAILABLE, from the original
    calls = []

    def write():
        calls.append(1)
        try:
            raise cause
        except sqlite3.OperationalError as exc:
            raise MlflowException(str(exc), error_code=TEMPORARILY_UNAVAILABLE) from exc
    with pytest.raises(StoreUnwritable, match="attempt to write a readonly database"):
        while_store_busy(write, attempts=5, pause_s=0.0)
    assert len(calls) == 1


def test_a_locked_database_is_busy_not_unwritable(tmp_path):
    path = tmp_path / "store.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")
    try:
        sqlite3.connect(path, timeout=0).execute("insert into t values (1)")
    except sqlite3.OperationalError as exc:
        locked = exc
    holder.execute("rollback")
    assert "database is locked" in str(locked)
    assert unwritable_reason(locked) is None
    assert unwritable_reason(MlflowException(str(locked), error_code=TEMPORARILY_UNAVAILABLE)) is None


def test_an_open_run_failing_on_a_full_disk_is_closed_failed_with_the_reason(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("x")
    with pytest.raises(StoreUnwritable) as raised:
        with open_run(client, experiment, run_name="r", tags={}) as run:
            dev_full_error_raised = dev_full_error()
            raise dev_full_error_raised  # say, a checkpoint on a full disk beside a store that works
    closed = client.get_run(run.run_id)
    assert closed.info.status == "FAILED"
    assert closed.data.tags["error"] == ("StoreUnwritable: cannot write the tracking store or outputs: "
                                         "[Errno 28] No space left on device")
    assert f"run {run.run_id} closed FAILED" in str(raised.value)


# ------------------------------------------------------------------ orphaned runs
ORPHAN = """
import os, sys
from pathlib import Path
from mlflow.tracking import MlflowClient
from anyq.tracking.orphans import hold_run
from anyq.tracking.runs import open_run
client = MlflowClient(sys.argv[1])
tags = dict(arg.split("=", 1) for arg in sys.argv[4:])
with open_run(client, sys.argv[2], run_name="orphan", tags=tags,
              hold=lambda run_id: hold_run(Path(sys.argv[3]), run_id)) as run:
    print(run.run_id, flush=True)
    os.kill(os.getpid(), 9)
"""


def test_a_run_whose_process_was_killed_is_closed_by_the_next_opener_and_a_live_one_is_not(tmp_path):
    uri, locks = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "locks"
    client = MlflowClient(uri)
    experiment = client.create_experiment("x")
    done = subprocess.run([sys.executable, "-c", ORPHAN, uri, experiment, str(locks)], capture_output=True,
                          text=True, timeout=120, env=clean_env(), cwd=REPO)
    assert done.returncode == -9, done.stderr
    dead = done.stdout.strip()
    assert client.get_run(dead).info.status == "RUNNING"
    live = client.create_run(experiment).info.run_id
    with hold_run(locks, live):
        assert close_orphaned_runs(client, locks) == [dead]
        assert client.get_run(live).info.status == "RUNNING"
    orphan = client.get_run(dead)
    assert orphan.info.status == "FAILED" and orphan.data.tags["error"] == ORPHAN_REASON
    assert close_orphaned_runs(client, locks) == []  # once: its lock is gone
    assert sorted(p.name for p in locks.iterdir()) == []


@pytest.mark.parametrize("tag", ["opened_by_trial=parent/0", "optuna.trial_number=0"])
def test_a_dead_trials_run_is_left_to_the_sweeps_clean_up(tmp_path, tag):
    """A run of a trial whose process died is closed by the sweep, which also records the trial's
    state (KILLED, trial_state=FAIL), never by the lock files first: one owner per run."""
    from anyq.tracking.trial_runs import OPENED_BY_TRIAL_TAG, TRIAL_NUMBER_TAG

    assert tag.split("=")[0] in (OPENED_BY_TRIAL_TAG, TRIAL_NUMBER_TAG)
    uri, locks = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "locks"
    client = MlflowClient(uri)
    experiment = client.create_experiment("x")
    done = subprocess.run([sys.executable, "-c", ORPHAN, uri, experiment, str(locks), tag], capture_output=True,
                          text=True, timeout=120, env=clean_env(), cwd=REPO)
    assert done.returncode == -9, done.stderr
    dead = done.stdout.strip()
    assert close_orphaned_runs(client, locks) == []
    assert client.get_run(dead).info.status == "RUNNING"
    assert [p.stem for p in locks.iterdir()] == [dead]  # kept: once the sweep closes it, the next pass drops it
    client.set_terminated(dead, "KILLED")
    assert close_orphaned_runs(client, locks) == []
    assert list(locks.iterdir()) == []


# ------------------------------------------------------------------ anyq-train end to end
@contextmanager
def mounted(source: str, target: Path, *options: str) -> Iterator[None]:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, source, str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def read_only(path: Path) -> None:
    """``path`` read-only from now on, for files opened after this: a read-only bind mount made
    beside it and moved over it in one step. (Bound over itself, then remounted, it raced the run:
    a file the run opened for writing between the two steps made the remount "busy".) ``path``'s
    parent must be a mount point (the tests' tmpfs); it is made private here, as the kernel
    refuses to move a mount under a shared one."""
    staging = path.parent / f".{path.name}-read-only"
    staging.mkdir()
    subprocess.run(["mount", "--make-private", str(path.parent)], check=True)
    subprocess.run(["mount", "--bind", str(path), str(staging)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(staging)], check=True)
    subprocess.run(["mount", "--move", str(staging), str(path)], check=True)


def train(root: Path, *extra: str, background: bool = False):
    cmd = [sys.executable, "-c", "from anyq.app.train import cli; cli()", *TINY, "model=baseline_adaptive",
           "tracking.log_model=false", f"paths.root={root}", *extra]
    env = clean_env(OMP_NUM_THREADS="1")
    if background:
        log = open(root.parent / f"{root.name}.log", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        log.close()
        return proc
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=DEADLINE_S)


def wait_for_checkpoint(root: Path, proc: subprocess.Popen) -> Path:
    found = wait_for(lambda: sorted(root.glob("outputs/*/*/checkpoints/last.ckpt")), proc, DEADLINE_S,
                     "a checkpoint", every_s=0.1)
    return found[0]


def runs(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("anyq-train: error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output, output
    return lines[0]


def fill(path: Path) -> None:
    """Write zeros into ``path`` until the file system says it is full."""
    with open(path, "wb") as out:
        try:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        except OSError:
            pass


def break_store_mid_run(root: Path, log: Path, break_it: Callable[[], None]) -> tuple[Path, str]:
    """Train in the background until a checkpoint exists, call ``break_it``, and expect exit 74;
    the checkpoint and the command's output."""
    proc = train(root, "trainer.max_epochs=2000", background=True)
    try:
        checkpoint = wait_for_checkpoint(root, proc)
        break_it()
        assert proc.wait(timeout=DEADLINE_S) == EXIT_STORE_UNWRITABLE
    finally:
        if proc.poll() is None:
            proc.kill()
    return checkpoint, log.read_text()


@pytest.mark.slow
def test_a_full_disk_mid_run_is_one_line_and_the_next_command_closes_the_run(tmp_path):
    root = tmp_path / "small"
    with mounted("tmpfs", root, "-t", "tmpfs", "-o", "size=64m"):
        checkpoint, output = break_store_mid_run(root, tmp_path / "small.log", lambda: fill(root / "filler"))
        line = one_error_line(output)
        assert len(output.splitlines()) < 10, output
        (run,) = runs(root)  # readable while full
        # the store's write meets the full disk first, or a checkpoint's; closing the run is one
        # more write, which SQLite may still fit in a page it has (closed FAILED now) or not (left
        # for the next command that can write the store)
        reason = r"(database or disk is full|\[Errno 28\] No space left on device.*)"
        match = re.fullmatch(rf"anyq-train: error: cannot write the tracking store or outputs: {reason}; "
                             rf"run {run.info.run_id} (closed FAILED|stays RUNNING until the next anyq-train "
                             "that can write the store closes it FAILED)", line)
        assert match, line
        closed_now = match.group(2) == "closed FAILED"
        assert run.info.status == ("FAILED" if closed_now else "RUNNING")

        (root / "filler").unlink()  # space is back: the checkpoint scores, the run is closed
        scored = train(root, "task=test", f"resume={checkpoint}")
        assert scored.returncode == 0, scored.stderr
        by_id = {r.info.run_id: r for r in runs(root)}
        assert by_id[run.info.run_id].info.status == "FAILED"
        if not closed_now:
            assert by_id[run.info.run_id].data.tags["error"] == ORPHAN_REASON
        (test_run,) = [r for r in by_id.values() if r.data.tags["task"] == "test"]
        assert test_run.info.status == "FINISHED" and test_run.data.metrics["test/crps"] > 0
        assert [r.info.run_id for r in by_id.values() if r.info.status == "RUNNING"] == []


@pytest.mark.slow
def test_a_store_made_read_only_mid_run_is_one_line_and_resume_last_continues_it(tmp_path):
    root = tmp_path / "store"
    with mounted("tmpfs", root, "-t", "tmpfs", "-o", "size=256m"):
        _, output = break_store_mid_run(root, tmp_path / "store.log", lambda: read_only(root / "mlruns"))
        line = one_error_line(output)
        # which write meets the read-only mount first decides SQLite's words
        reason = r"(unable to open database file|disk i/o error|attempt to write a readonly database|\[Errno 30\] .*)"
        assert re.fullmatch(rf"anyq-train: error: cannot write the tracking store or outputs: {reason}; "
                            r"run \w{32} stays RUNNING until the next anyq-train that can write the store "
                            "closes it FAILED", line), line
        refused = train(root)  # still read-only: refused before it trains, nothing opened
        assert refused.returncode == EXIT_STORE_UNWRITABLE
        assert "Read-only file system" in one_error_line(refused.stderr + refused.stdout)

        subprocess.run(["umount", "-l", str(root / "mlruns")], check=True)  # writable again
        # read only now: a transaction the mount cut can leave a hot journal, which SQLite must
        # roll back (a write) before anyone reads the file
        (run,) = runs(root)
        assert run.info.status == "RUNNING"  # the refused command closed nothing
        resumed = train(root, "resume=last", "trainer.max_epochs=3")
        assert resumed.returncode == 0, resumed.stderr
        (after,) = runs(root)  # the same run, closed by the resume's opening, then continued
        assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
        assert after.data.tags["resumes"] == "1" and after.data.metrics["test/crps"] > 0


STUDY_PARENT = """
import os, sys
from anyq.tracking.study_parent import open_study_parent
study = open_study_parent(None, sys.argv[1], "x", "s", {}, fresh=True)
print(study.run_id, flush=True)
os.kill(os.getpid(), 9)
"""


def test_a_study_parent_whose_processes_all_died_is_closed_by_the_next_opener(tmp_path):
    from anyq.tracking.orphans import hold_shared_run

    mlruns = tmp_path / "mlruns"
    done = subprocess.run([sys.executable, "-c", STUDY_PARENT, str(mlruns)], capture_output=True, text=True,
                          timeout=120, env=clean_env(), cwd=REPO)
    assert done.returncode == -9, done.stderr
    dead = done.stdout.strip()
    client, locks = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}"), mlruns / "locks" / "runs"
    assert client.get_run(dead).info.status == "RUNNING"
    with hold_shared_run(locks, dead), hold_shared_run(locks, dead):  # workers of a shared study still live
        assert close_orphaned_runs(client, locks) == []
    assert close_orphaned_runs(client, locks) == [dead]
    parent = client.get_run(dead)
    assert parent.info.status == "FAILED" and parent.data.tags["error"] == ORPHAN_REASON
