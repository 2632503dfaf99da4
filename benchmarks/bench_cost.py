"""Cost of the data layer and of training as the panel grows.

Panels from the synthetic generator's knobs: the default (8 series x 3 years), 4x and 16x
the series (``size``), and MHLV's size (35 series x 13 years). Each size runs in a fresh
process so that its peak memory is its own. Measured per size:

- ``gen s``: generating the panel (a user's file would be read instead);
- ``prep s``: the data module (gap filling, train/val/test windows, the window views; the
  fastest of ``--repeats`` builds; also in process CPU time and per panel cell) and
  ``prep peak``: the resident-memory peak of that step over the memory before it, also as a
  multiple of the panel's float32 bytes (a constant multiple means linear memory);
- ``load w/s``: training windows per second of the data loader alone over one full epoch
  (the gather of shuffled batches), and ``epoch alloc``: the largest Python-heap
  allocation peak (tracemalloc, which sees numpy buffers) during a second epoch, against
  the panel's bytes and against what an epoch must hold (``order+batch``: the shuffled
  int64 order of the windows and one batch with its history/target split): no per-epoch
  copy of the panel means the two agree and stay below one panel;
- ``train w/s`` (and per CPU second, ``train w/CPU s``, robust to a loaded machine with one
  thread): training windows per second of the real module and trainer (forward,
  backward, optimiser step, sampler update) over ``--steps`` steps after ``--warmup``;
  constant across sizes when per-step cost does not depend on the panel.

The last lines fit log-log slopes of prep time and prep peak against the panel's size
(1.0 = linear).

    python benchmarks/bench_cost.py                      # all sizes, 1 thread
    python benchmarks/bench_cost.py --cases default,x4 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from compose_job import compose_job  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
#: name -> (size, n_series, years)
CASES = {"default": (1, 8, 3), "x4": (4, 8, 3), "x16": (16, 8, 3), "mhlv": (1, 35, 13)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--steps", type=int, default=20, help="timed training steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed training steps first")
    p.add_argument("--repeats", type=int, default=3, help="data-module builds timed (the fastest counts)")
    p.add_argument("--model", default="baseline_adaptive", help="anyq variant trained")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "bench-cost")
    p.add_argument("--one", help=argparse.SUPPRESS)  # run one case in this process, print JSON
    return p.parse_args()


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory of this process from /proc (``VmHWM`` = peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak() -> None:
    """Set VmHWM back to the current RSS (Linux ``clear_refs`` value 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def compose(case: str, args: argparse.Namespace, workdir: Path):
    size, n_series, years = CASES[case]
    overrides = [
        f"data.synthetic.size={size}", f"data.synthetic.n_series={n_series}", f"data.synthetic.years={years}",
        f"model={args.model}", "tracking=none", f"trainer.num_threads={args.threads}", f"paths.root={workdir}",
    ]
    return compose_job(overrides, workdir / case)


def measure(case: str, args: argparse.Namespace) -> dict[str, float | str]:
    import tempfile

    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import Callback

    from anyq.training.builders import build_datamodule, build_module, load_dataset

    torch.set_num_threads(args.threads)
    cfg = compose(case, args, Path(tempfile.mkdtemp(prefix="anyq-bench-cost-")))
    out: dict[str, float | str] = {"case": case}

    started, cpu = time.perf_counter(), time.process_time()
    dataset = load_dataset(cfg.data)
    out["gen_s"], out["gen_cpu_s"] = time.perf_counter() - started, time.process_time() - cpu
    panel = dataset.panel
    out.update(series=panel.n_series, hours=panel.n_steps, panel_mb=panel.values.nbytes / 2**20)

    before = rss_mb()
    reset_peak()
    started, cpu = time.perf_counter(), time.process_time()
    dm = build_datamodule(cfg.data, dataset, cfg.seed)
    train = dm.dataset("train")
    for split in ("val", "test"):
        dm.dataset(split)
    prep, prep_cpu = [time.perf_counter() - started], [time.process_time() - cpu]
    out["prep_peak_mb"] = rss_mb("VmHWM") - before
    out["prep_kept_mb"] = rss_mb() - before
    for _ in range(args.repeats - 1):  # the fastest of a few: timings on a shared machine are noisy
        started, cpu = time.perf_counter(), time.process_time()
        again = build_datamodule(cfg.data, dataset, cfg.seed)
        for split in ("train", "val", "test"):
            again.dataset(split)
        prep.append(time.perf_counter() - started)
        prep_cpu.append(time.process_time() - cpu)
        del again
    out["prep_s"], out["prep_cpu_s"] = min(prep), min(prep_cpu)
    out["train_windows"] = len(train)
    out["dataset_shares_panel"] = float(np.shares_memory(train.values, dm.filled_values))

    loader = dm.train_dataloader()
    started = time.perf_counter()
    n = sum(batch["history"].shape[0] for batch in loader)
    out["load_wps"] = n / (time.perf_counter() - started)
    tracemalloc.start()
    for _ in loader:  # second epoch: what does one epoch allocate at most at once?
        pass
    out["epoch_alloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    # What an epoch must allocate: the shuffled order (int64 per window) and the batches in
    # flight: the gathered block and its history/target halves, plus the previous batch that
    # the loop variable still holds: 3 x [B, L + H] float32.
    width = dm.history_length + dm.horizon_length
    out["order_and_batch_mb"] = (8 * len(train) + 3 * 4 * cfg.data.train_batch_size * width) / 2**20
    tracemalloc.stop()

    class StepClock(Callback):
        def __init__(self) -> None:
            self.stamps: list[float] = []
            self.cpu: list[float] = []

        def on_train_batch_end(self, *_: object) -> None:
            self.stamps.append(time.perf_counter())
            self.cpu.append(time.process_time())

    clock = StepClock()
    module = build_module(cfg, panel.n_series)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=args.warmup + args.steps, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=[clock],
    )
    reset_peak()
    before = rss_mb()
    trainer.fit(module, datamodule=dm)
    stamps = clock.stamps[args.warmup:]
    out["train_wps"] = cfg.data.train_batch_size * (len(stamps) - 1) / (stamps[-1] - stamps[0])
    cpu = clock.cpu[args.warmup:]
    out["train_wpcs"] = cfg.data.train_batch_size * (len(cpu) - 1) / (cpu[-1] - cpu[0])
    out["train_peak_mb"] = rss_mb("VmHWM") - before
    out["batch"] = cfg.data.train_batch_size
    return out


COLUMNS = (
    ("case", "{}"), ("series", "{:.0f}"), ("hours", "{:.0f}"), ("panel MB", "{:.1f}"),
    ("train windows", "{:.0f}"), ("gen s", "{:.2f}"), ("prep s", "{:.2f}"), ("prep CPU s", "{:.3f}"),
    ("prep CPU ns/cell", "{:.0f}"), ("prep peak MB", "{:.0f}"),
    ("peak / panel", "{:.1f}"), ("load w/s", "{:.0f}"), ("epoch alloc MB", "{:.2f}"),
    ("alloc / panel", "{:.3f}"), ("order+batch MB", "{:.2f}"), ("train w/s", "{:.0f}"),
    ("train w/CPU s", "{:.0f}"),
)


def row(r: dict) -> list[float | str]:
    cells = r["series"] * r["hours"]
    return [r["case"], r["series"], r["hours"], r["panel_mb"], r["train_windows"], r["gen_s"], r["prep_s"],
            r["prep_cpu_s"], 1e9 * r["prep_cpu_s"] / cells, r["prep_peak_mb"], r["prep_peak_mb"] / r["panel_mb"], r["load_wps"], r["epoch_alloc_peak_mb"],
            r["epoch_alloc_peak_mb"] / r["panel_mb"], r["order_and_batch_mb"], r["train_wps"],
            r["train_wpcs"]]


def slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of log y on log x (1.0 = linear growth)."""
    return float(np.polyfit(np.log(x), np.log(np.maximum(y, 1e-9)), 1)[0])


def main() -> int:
    args = parse_args()
    os.environ.setdefault("ANYQ_ROOT", str(ROOT))
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return 0
    results = []
    for case in [c for c in args.cases.split(",") if c]:
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        cmd = [sys.executable, __file__, "--one", case, "--threads", str(args.threads), "--steps",
               str(args.steps), "--warmup", str(args.warmup), "--model", args.model, "--repeats", str(args.repeats)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"case {case} failed:\n{done.stderr[-2000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{case}: done", file=sys.stderr, flush=True)
    lines = ["| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(f.format(v) for (_, f), v in zip(COLUMNS, row(r))) + " |" for r in results]
    if len(results) > 1:
        cells = [r["series"] * r["hours"] for r in results]
        lines.append("")
        lines.append(f"log-log slope vs panel cells: prep time {slope(cells, [r['prep_s'] for r in results]):.2f}, "
                     f"prep CPU time {slope(cells, [r['prep_cpu_s'] for r in results]):.2f}, "
                     f"prep peak memory {slope(cells, [r['prep_peak_mb'] for r in results]):.2f}, "
                     f"train windows {slope(cells, [r['train_windows'] for r in results]):.2f}; "
                     f"training batch {results[0]['batch']}, {args.steps} timed steps, {args.threads} threads")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"{stamp}.md").write_text(text + "\n")
    (args.out / f"{stamp}.json").write_text(json.dumps(results, indent=1))
    print(f"written: {args.out / stamp}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
