"""Worker idle time with and without a batch barrier, and the wall time of one study with
1 and 2 workers on each launcher.

The study: ``--trials`` trials of ``sweep=adaptive_attention`` on the tiny test model, with
``trainer.max_epochs`` a searched parameter (``choice(1, 12)`` by default, ``--epochs``), so
trials differ in length. The random sampler with a fixed seed (``--seed``; 3 draws 12, 1,
12, 1, 12, 1, 1, 12 epochs: every batch of two pairs a long trial with a short one) gives
every run the same trials in the same order; the pruner and the baseline comparison are
off, so a trial's length is its epochs plus a fixed start-up. Every run has its own root
(fresh study, fresh MLflow store).

Idle share, from the trials' start/end times in the study (``k`` slots, span from the first
start to the last end): the slot-time with no trial running, divided by ``k * span``.
Reported twice: over the whole span, and only while trials were still waiting to start
(what a barrier wastes; after the last start nothing is left to run, whatever the engine).

    .venv/bin/python benchmarks/bench_barrier.py                          # joblib: barrier vs none
    .venv/bin/python benchmarks/bench_barrier.py --walltime --ray         # + 1 vs 2 workers, joblib and Ray
    .venv/bin/python benchmarks/bench_barrier.py --epochs 1 4 --seed 0 --walltime --ray --skip-barrier

``--ray`` starts a private local Ray head (2 CPUs, free ports) for the Ray runs and stops it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

BIN = Path(sys.executable).parent
TINY = ["trainer=fast", "data.synthetic.n_series=3", "data.synthetic.years=1", "data.train_step=24",
        "data.train_batch_size=64", "data.eval_batch_size=512", "model.backbone.num_blocks=2",
        "model.backbone.layer_width=32", "model.attention.d_model=16", "model.attention.d_ff=32",
        "evaluation.num_levels=39", "evaluation.val_num_levels=39", "optim.warmup_updates=5"]
def space(epochs: tuple[int, int], seed: int) -> list[str]:
    return ["hydra.sweeper.params=null", f"trainer.max_epochs=choice({epochs[0]}, {epochs[1]})",
            "model.attention.adaptive_temp=interval(0.0, 2.0)", "model.attention.n_heads=choice(1, 2)",
            "hydra/sweeper/sampler=random", f"hydra.sweeper.sampler.seed={seed}", "hydra.sweeper.pruner=null",
            "tracking.compare_to_baseline=false", "trainer.num_threads=1"]


@dataclass
class Result:
    label: str
    wall: float
    idle_total: float
    idle_while_waiting: float
    states: dict[str, int]


def idle_shares(trials: list[optuna.trial.FrozenTrial], slots: int) -> tuple[float, float]:
    """(idle share over the span, idle share until the last trial started); see module doc."""
    spans = sorted((t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in trials)
    first, last_start, last_end = spans[0][0], max(s for s, _ in spans), max(e for _, e in spans)

    def idle(until: float) -> float:
        busy = sum(max(0.0, min(e, until) - s) for s, e in spans if s < until)
        return (slots * (until - first) - busy) / (slots * (until - first)) if until > first else 0.0

    return idle(last_end), idle(last_start)


def run_study(label: str, root: Path, slots: int, launcher: list[str], args: argparse.Namespace,
              barrier: bool) -> Result:
    trials = args.trials
    cmd = [str(BIN / "anyq-train"), "-m", "sweep=adaptive_attention", *TINY, *space(args.epochs, args.seed),
           f"paths.root={root}",
           f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.n_jobs={slots}",
           f"hydra.sweeper.barrier={str(barrier).lower()}", *launcher]
    env = {k: v for k, v in os.environ.items() if k not in ("ANYQ_OPTUNA_STORAGE", "MLFLOW_TRACKING_URI")}
    started = time.perf_counter()
    done = subprocess.run(cmd, env={**env, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{label}: exit {done.returncode}\n{done.stderr[-3000:]}")
    study = optuna.load_study(study_name="adaptive_attention", storage=f"sqlite:///{root}/mlruns/optuna.db")
    finished = [t for t in study.trials if t.datetime_complete is not None]
    states: dict[str, int] = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    total, waiting = idle_shares(finished, slots)
    return Result(label, wall, total, waiting, states)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RayHead:
    """A private head: 2 CPUs, free ports, its own session; stopped with its process group."""

    PORTS = ("ray-client-server", "dashboard-agent-listen", "dashboard-agent-grpc", "runtime-env-agent",
             "metrics-export", "node-manager", "object-manager")

    def __enter__(self) -> str:
        port = free_port()
        self.temp = Path(tempfile.mkdtemp(prefix="anyq-ray-"))
        self.proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.temp}",
             *(f"--{name}-port={free_port()}" for name in self.PORTS)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        address = f"127.0.0.1:{port}"
        probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False); "
                 "sys.exit(0 if any(n['Alive'] for n in ray.nodes()) else 1)")
        for _ in range(120):
            if subprocess.run([sys.executable, "-c", probe, address], capture_output=True).returncode == 0:
                return address
            time.sleep(1)
        self.__exit__()
        raise TimeoutError("Ray head did not start")

    def __exit__(self, *exc: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break
        shutil.rmtree(self.temp, ignore_errors=True)


def print_result(r: Result) -> None:
    print(f"{r.label:32s} wall {r.wall:7.1f} s   idle {100 * r.idle_total:5.1f} % of slot time "
          f"({100 * r.idle_while_waiting:5.1f} % while trials waited)   {r.states}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, nargs=2, default=(1, 12), help="the two trainer.max_epochs choices")
    parser.add_argument("--seed", type=int, default=3, help="the random sampler's seed")
    parser.add_argument("--skip-barrier", action="store_true", help="only the wall-time runs")
    parser.add_argument("--walltime", action="store_true", help="also 1 vs 2 workers per launcher")
    parser.add_argument("--ray", action="store_true", help="also the Ray launcher (local head)")
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="anyq-bench-"))
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]

    print(f"== {args.trials} trials, trainer.max_epochs in {tuple(args.epochs)}, seed {args.seed} ==")
    if not args.skip_barrier:
        for barrier in (True, False):
            label = f"joblib x2 {'barrier' if barrier else 'no barrier'}"
            print_result(run_study(label, root / label.replace(" ", "-"), 2, joblib, args, barrier))
    if args.walltime:
        print_result(run_study("joblib x1", root / "joblib-1", 1, joblib, args, False))
        if args.skip_barrier:
            print_result(run_study("joblib x2", root / "joblib-2", 2, joblib, args, False))
    if args.ray:
        with RayHead() as address:
            ray = ["hydra/launcher=anyq_ray", f"hydra.launcher.address={address}"]
            for slots in ((1, 2) if args.walltime else (2,)):
                for barrier in ((False,) if slots == 1 else (True, False)):
                    label = f"ray x{slots}{' barrier' if barrier else ''}"
                    print_result(run_study(label, root / label.replace(" ", "-"), slots, ray, args, barrier))
    if args.root is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
