"""How many trials workers sharing one study create for a total of ``n_trials``: with the
sweep engine's ask under the study lock (``anyq.sweeping.engine.SharedStudy``), and with
Optuna alone (``Study.optimize`` with ``MaxTrialsCallback(n_trials, states=None)``).

Each worker is a process with ``--n-jobs`` threads on one SQLite study; the objective
stands in for a job (sleeps 0-20 ms, no training). docs/design.md §5 quotes the result.

    .venv/bin/python benchmarks/bench_total.py [--workers 2] [--n-jobs 2] [--n-trials 20] [--repeats 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import tempfile
import time
from pathlib import Path

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from anyq.sweeping.engine import StudyComplete, SweepSettings, open_study

SPACE = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


def objective(trial: optuna.Trial) -> float:
    time.sleep(random.uniform(0.0, 0.02))
    return trial.suggest_float("x", 0.0, 1.0)


def worker(url: str, guarded: bool, n_trials: int, n_jobs: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    settings = SweepSettings(study_name="bench", storage_url=url, directions=["minimize"], objectives=["v"],
                             n_trials=n_trials, n_jobs=n_jobs)
    study = open_study(settings)
    if not guarded:  # the same storage, Optuna's own Study
        study = optuna.load_study(study_name="bench", storage=url)
    try:
        study.optimize(objective, n_jobs=n_jobs, callbacks=[MaxTrialsCallback(n_trials, states=None)])
    except StudyComplete:
        pass


def one_study(guarded: bool, args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'optuna.db'}"
        open_study(SweepSettings(study_name="bench", storage_url=url, directions=["minimize"], objectives=["v"],
                                 n_trials=args.n_trials))
        procs = [multiprocessing.Process(target=worker, args=(url, guarded, args.n_trials, args.n_jobs))
                 for _ in range(args.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        trials = optuna.load_study(study_name="bench", storage=url).get_trials()
        assert TrialState.RUNNING not in {t.state for t in trials}
        return len(trials)


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"{args.workers} workers x {args.n_jobs} threads, n_trials={args.n_trials}, {args.repeats} studies each")
    for guarded, name in ((True, "ask under the study lock"), (False, "Optuna alone (MaxTrialsCallback)")):
        made = [one_study(guarded, args) for _ in range(args.repeats)]
        print(f"{name:34s} trials created: min {min(made)}  median {statistics.median(made):g}  max {max(made)}"
              f"  (over the total in {sum(m > args.n_trials for m in made)}/{args.repeats})", flush=True)


if __name__ == "__main__":
    main()
