"""What a sweep will cost, printed before its first trial: jobs x budget x a measured step time.

Measured here and now, on the machine that runs the sweep, from the sweep's base config (its
model sizes, batch, calendar and threads; the searched settings at their base values):

- the step time: the median of 3 optimiser steps (forward, backward, Adam, sampler update) on a
  random batch of ``data.train_batch_size`` windows, after one warm-up step, with
  ``trainer.num_threads`` torch threads;
- one evaluation forward pass: up to :data:`EVAL_WINDOWS` windows forecast on the validation
  grid, scaled to ``data.eval_batch_size`` windows (the cost is linear in windows), which
  prices a validation (the validation split's batches) and, scaled to the test grid, the
  test and the conformal fit (the test and validation batches once each).

The data module is built once for the split sizes (no training). The estimate counts every
trial left plus one baseline (trained once per seed, shared by the trials; none when the store
holds the base config's baseline already), at the full budget
(pruning only shortens it) and without early stopping, spread over the sweep's parallel
slots; it leaves out each job's start-up and logging (:data:`STARTUP_S` per job, a stored
figure).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from anyq.tracking.baseline import baseline_signature, find_baseline_run
from anyq.data.dataset import Dataset, load_dataset
from anyq.errors import counted
from anyq.training.builders import build_datamodule, build_model
from anyq.training.run import settle_calendar

#: Seconds of start-up and logging per job beside training and evaluation (data, MLflow run,
#: checkpoints, forecasts, model artifact, baseline comparison): measured with the default
#: ``make sweep`` (README.md, "Sweeps"): its 949 CPU-s less the estimated training and
#: evaluation of its 9 jobs (670 s) and the sweeper's own (about 30 s), per job; on a loaded
#: machine, so an upper bound.
STARTUP_S = 28.0
STEPS_TIMED = 3
EVAL_WINDOWS = 128  # windows of the timed evaluation pass


@dataclass(frozen=True)
class SweepCost:
    """The estimate's parts; seconds are wall seconds of one job on one slot."""

    trials: int  # trials left to run
    slots: int  # jobs side by side (hydra.sweeper.n_jobs with a parallel launcher)
    steps: int  # optimiser steps per job
    checks: int  # validations per job
    step_s: float  # measured: one optimiser step
    validation_s: float  # one validation
    test_s: float  # the test and the conformal fit
    threads: int  # torch threads the steps were timed with
    batch: int  # windows per training step
    baseline: int = 1  # 0: the store holds the baseline the trials compare with

    @property
    def jobs(self) -> int:
        return self.trials + self.baseline

    @property
    def job_s(self) -> float:
        return self.steps * self.step_s + self.checks * self.validation_s + self.test_s + STARTUP_S

    @property
    def wall_s(self) -> float:
        return math.ceil(self.jobs / self.slots) * self.job_s

    def lines(self) -> list[str]:
        wall = "under 1 min" if self.wall_s < 60 else f"about {self.wall_s / 60:.0f} min"
        return [
            f"Cost estimate: {counted(self.jobs, 'job')} ({counted(self.trials, 'trial')}"
            f"{' + 1 baseline' if self.baseline else '; their baseline is in the store'}), "
            f"{self.job_s / 60:.1f} min a job, {self.slots} side by side: {wall} wall at most "
            f"(pruning stops trials early)",
            f"  a job: {self.steps} steps x {self.step_s:.3g} s + {counted(self.checks, 'validation')} x "
            f"{self.validation_s:.3g} s + test {self.test_s:.3g} s + start-up {STARTUP_S:.0f} s",
            f"  step time measured now: median of {STEPS_TIMED} optimiser steps of the base config "
            f"(batch {self.batch}, {counted(self.threads, 'torch thread')}); "
            f"start-up: a stored figure (anyq.sweeping.cost.STARTUP_S)",
        ]


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls (one-off
    allocations and kernel choices)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def budget_of(cfg: DictConfig, batches_per_epoch: int) -> tuple[int, int]:
    """``(optimiser steps, validations)`` of one job under ``cfg.trainer``'s budget."""
    t = cfg.trainer
    if t.max_epochs is None:
        return int(t.max_steps), int(t.max_steps) // int(t.val_check_interval)
    steps = int(t.max_epochs) * batches_per_epoch // int(t.accumulate_grad_batches)
    if t.max_steps is not None and t.max_steps > 0:
        steps = min(steps, int(t.max_steps))
    return steps, int(t.max_epochs)


def estimate(cfg: DictConfig, trials: int, slots: int, client: MlflowClient | None = None,
             dataset: Dataset | None = None) -> SweepCost:
    """Measure the base config ``cfg`` (see the module) and price ``trials`` trials on ``slots``;
    ``client``: the study's store, where a baseline already trained is not counted again;
    ``dataset``: ``cfg.data`` loaded already (the sweeper's), else loaded here."""
    before = torch.get_num_threads()
    threads = int(cfg.trainer.num_threads or before)
    torch.set_num_threads(threads)
    try:
        dataset = dataset if dataset is not None else load_dataset(cfg.data)
        cfg = settle_calendar(cfg, dataset)  # the calendar inputs the jobs will take
        trained = client is not None and find_baseline_run(
            client, baseline_signature(cfg, dataset.fingerprint), dataset.fingerprint) is not None
        datamodule = build_datamodule(cfg.data, dataset, int(cfg.seed))
        datamodule.setup("fit")
        datamodule.setup("test")
        train_batches = len(datamodule.train_dataloader())
        limit = cfg.trainer.limit_train_batches
        per_epoch = min(train_batches, int(limit)) if isinstance(limit, int) else int(train_batches * float(limit))
        val_batches, test_batches = len(datamodule.val_dataloader()), len(datamodule.test_dataloader())

        model = build_model(cfg).train()
        optimiser = torch.optim.Adam(model.parameters(), lr=float(cfg.optim.lr))
        history_length, horizon_length = int(cfg.data.history_length), int(cfg.data.horizon_length)
        batch = int(cfg.data.train_batch_size)
        features = model.calendar_features

        def window(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
            series = 1000.0 + 100.0 * torch.randn(n, history_length + horizon_length)
            calendar = torch.zeros(n, history_length + horizon_length, features) if features else None
            return series[:, :history_length], series[:, history_length:], calendar

        history, target, calendar = window(batch)

        def step() -> None:
            optimiser.zero_grad(set_to_none=True)
            loss, _, _ = model.training_loss(history, target, calendar=calendar)
            loss.backward()
            optimiser.step()

        step_s = median_seconds(step, STEPS_TIMED)
        model.eval()
        n_eval = min(EVAL_WINDOWS, int(cfg.data.eval_batch_size))
        e_history, _, e_calendar = window(n_eval)
        val_levels, test_levels = int(cfg.evaluation.val_num_levels), int(cfg.evaluation.num_levels)
        levels = torch.linspace(0.025, 0.975, val_levels).expand(n_eval, -1)
        with torch.no_grad():  # one evaluation batch of data.eval_batch_size windows
            eval_s = median_seconds(lambda: model(e_history, levels, e_calendar, raw=True), 1) \
                * int(cfg.data.eval_batch_size) / n_eval
    finally:
        torch.set_num_threads(before)
    steps, checks = budget_of(cfg, per_epoch)
    return SweepCost(trials=trials, slots=max(1, slots), steps=steps, checks=checks, step_s=step_s,
                     validation_s=val_batches * eval_s,
                     test_s=(test_batches + val_batches) * eval_s * test_levels / val_levels,
                     threads=threads, batch=batch, baseline=0 if trained else 1)
