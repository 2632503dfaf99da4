"""Sweep benchmarks: pruning's saving, and the sweep engine's overhead per trial.

1. The same study budget (``--trials`` trials of ``sweep=adaptive_attention``) with the
   median pruner and without: wall time and the best validation CRPS reached.
2. One trial through ``anyq-train -m sweep=…`` against the same training run directly
   with ``anyq-train``; both find the baseline already in the store, so both train one
   model. Reported: wall time of each command and the relative overhead.

Run: ``.venv/bin/python benchmarks/bench_sweep.py [--trials 8] [--epochs 3] [--root DIR]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

BIN = Path(sys.executable).parent


def run(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([str(BIN / "anyq-train"), *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def best_value(root: Path, study: str) -> tuple[float, dict[str, int]]:
    s = optuna.load_study(study_name=study, storage=f"sqlite:///{root}/mlruns/optuna.db")
    states: dict[str, int] = {}
    for t in s.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return s.best_value, states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="anyq-bench-"))
    common = [f"trainer.max_epochs={args.epochs}", *args.extra]

    # Train the baseline once, so every later job reuses it.
    run(["model=baseline_adaptive", f"paths.root={root}", "tracking.experiment=bench", *common])

    print(f"== pruning: {args.trials} trials, {args.epochs} epochs each ==")
    for name, pruner in (("median", []), ("none", ["hydra.sweeper.pruner=null"])):
        study = f"bench-{name}"
        wall = run(["-m", "sweep=adaptive_attention", f"paths.root={root}",
                    f"hydra.sweeper.study_name={study}", f"hydra.sweeper.n_trials={args.trials}",
                    *pruner, *common])
        best, states = best_value(root, study)
        print(f"pruner={name:7s} wall {wall:7.1f} s  best val/crps {best:9.3f}  trials {states}")

    print("== overhead: one trial through the sweep vs the same run directly ==")
    params = ["model.sampler.num_adaptive_quantiles=3", "model.attention.adaptive_temp=1.0",
              "model.attention.n_heads=4", "model.attention.num_blocks=2"]
    direct = run(["model=adaptive_attention", f"paths.root={root}", "tracking.experiment=bench",
                  *params, *common])
    swept = run(["-m", "sweep=adaptive_attention", f"paths.root={root}", "hydra.sweeper.params=null",
                 "hydra.sweeper.study_name=bench-overhead", "hydra.sweeper.n_trials=1",
                 "hydra.sweeper.pruner=null", *params, *common])
    print(f"direct {direct:.1f} s, through the sweep {swept:.1f} s, overhead {100 * (swept / direct - 1):+.1f} %")
    if args.root is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
