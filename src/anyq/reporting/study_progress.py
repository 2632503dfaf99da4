"""Progress you can follow: one line per finished trial or cell, a final table, elapsed and ETA.

Lines are plain text on stdout, flushed, so they read the same on a terminal and in a file
that output is piped to (``make sweep > sweep.log``). The ETA assumes the remaining trials
or cells take as long as the finished ones did on average. Tables are drawn with ``rich``.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import time
from typing import Any, Optional, Sequence

import optuna
from optuna.trial import TrialState
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from anyq.interrupts import stop_if_requested
from anyq.reporting.numbers import significant
from anyq.reporting.table import wide_console
from anyq.sweeping.engine import superseded


def clock(seconds: float) -> str:
    """``H:MM:SS`` (``-`` for an unknown duration)."""
    if not math.isfinite(seconds):
        return "-"
    return str(dt.timedelta(seconds=int(round(max(seconds, 0.0)))))


class Clock:
    """Elapsed time, and the remaining time at the mean pace of the finished units."""

    def __init__(self, total: int, done_before: int = 0) -> None:
        self.total = total
        self.done_before = done_before  # finished in an earlier run: not timed here
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta(self, done: int) -> float:
        timed = done - self.done_before
        if timed <= 0:
            return math.nan
        return self.elapsed() / timed * max(self.total - done, 0)


def emit(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


def _value(values: Optional[Sequence[float]]) -> str:
    if not values:
        return "-"
    return ", ".join(significant(v, 5) for v in values)


class TrialProgress:
    """Called by the sweep engine after each told trial: prints one line per trial.

    ``trial 3 COMPLETE  val/crps=151.2  best=149.8 (trial 1)  4/8  elapsed 0:02:01  ETA 0:02:01``
    """

    def __init__(self, n_trials: int, objectives: Sequence[str]) -> None:
        self.n_trials = n_trials
        self.objectives = list(objectives)
        self.clock: Optional[Clock] = None

    def start(self, study: optuna.Study) -> None:
        self.clock = Clock(self.n_trials, done_before=len(_finished(study)))

    def __call__(self, study: optuna.Study, number: int, state: TrialState) -> None:
        if self.clock is None:
            self.start(study)
        assert self.clock is not None
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        done = len(_finished(study))
        metric = "/".join(self.objectives)
        emit(f"trial {number} {state.name}  {metric}={_value(trial.values)}  best={best_text(study)}  "
             f"{min(done, self.n_trials)}/{self.n_trials}  elapsed {clock(self.clock.elapsed())}  "
             f"ETA {clock(self.clock.eta(done))}")


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The finished trials that settle a place of the study's total: a lost trial whose retry
    was enqueued is not one (the retry settles it when it finishes)."""
    trials = study.get_trials(deepcopy=False)
    retried = superseded(trials)
    return [t for t in trials if t.state.is_finished() and t.number not in retried]


def best_text(study: optuna.Study) -> str:
    """The best value so far and its trial (single objective), or the Pareto front's size."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return "-"
    if len(study.directions) > 1:
        return f"{len(study.best_trials)} on the Pareto front"
    best = study.best_trial
    return f"{significant(best.value, 5)} (trial {best.number})"


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key's shortest ending that no other key ends with (``model.attention.n_heads``
    → ``n_heads``; ``attention.num_blocks`` beside ``backbone.num_blocks``)."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for size in range(1, len(parts) + 1):
            ending = ".".join(parts[-size:])
            if not any(other != key and (other == ending or other.endswith("." + ending)) for other in keys):
                break
        short[key] = ending
    return short


def trials_table(study: optuna.Study, objectives: Sequence[str]) -> Table:
    """Every trial of the study: number, state, objective values, duration, and a column per
    searched setting, headed by its shortest unique ending (the caption gives the full keys)."""
    table = Table(title=f"Study {study.study_name!r}: trials", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True, caption_justify="left")
    trials = study.get_trials(deepcopy=False)
    keys = list(dict.fromkeys(k for t in trials for k in t.params))
    names = short_names(keys)
    for name in ("trial", "state", "/".join(objectives), "seconds"):
        table.add_column(name, justify="left" if name == "state" else "right")
    for key in keys:
        table.add_column(_header(names[key]), justify="right")
    best = {t.number for t in study.best_trials} if any(t.state == TrialState.COMPLETE for t in trials) else set()
    for trial in trials:
        seconds = trial.duration.total_seconds() if trial.duration else math.nan
        params = [_param(trial.params[k]) if k in trial.params else "-" for k in keys]
        mark = " *" if trial.number in best else ""
        table.add_row(f"{trial.number}{mark}", trial.state.name, _value(trial.values),
                      "-" if math.isnan(seconds) else f"{seconds:.0f}", *params)
    caption = ["* best trial" if len(study.directions) == 1 else "* on the Pareto front"] if best else []
    table.caption = "\n".join([*caption, *(f"{names[k]}: {k}" for k in keys if names[k] != k)])
    return table


def _header(name: str, width: int = 8) -> str:
    """``name`` on two lines, split after the ``_`` or ``.`` nearest its middle, when longer than ``width``."""
    cuts = [i + 1 for i, ch in enumerate(name) if ch in "_." and 0 < i < len(name) - 1]
    if len(name) <= width or not cuts:
        return name
    cut = min(cuts, key=lambda i: abs(i - len(name) / 2))
    return f"{name[:cut]}\n{name[cut:]}"


def _settings(params: dict[str, Any]) -> str:
    """``n_heads=2 adaptive_temp=1.09``: each setting by its shortest unique ending."""
    names = short_names(list(params))
    return " ".join(f"{names[k]}={_param(v)}" for k, v in params.items())


def _param(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_trials(study: optuna.Study, objectives: Sequence[str]) -> None:
    wide_console().print(trials_table(study, objectives))


class CellProgress:
    """Grid studies (ablations, the main job): ``cells 3/12 done`` after each finished batch."""

    def __init__(self, study_name: str, total: int, done_before: int) -> None:
        self.study_name = study_name
        self.total = total
        self.done = done_before
        self.failed = 0
        self.clock = Clock(total, done_before)

    def cell_done(self, cell: str, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        emit(f"study {self.study_name}: cells {self.done}/{self.total} done  "
             f"({cell}: {'FINISHED' if ok else 'FAILED'})  elapsed {clock(self.clock.elapsed())}  "
             f"ETA {clock(self.clock.eta(self.done))}")


class Stages:
    """Named stages of a long job (building a report): a ``rich`` bar on a terminal, one plain
    ``<job>: stage k/n: <name>  elapsed`` line per stage when output is piped.

    Use as a context manager and call it with each stage's name as the stage starts. The
    start of a stage is a safe point (:func:`anyq.interrupts.stop_if_requested`): a signal
    received during the previous stage stops the job there, with :class:`~anyq.errors.Terminated`.
    """

    def __init__(self, job: str, total: int, console: Optional[Console] = None) -> None:
        self.job = job
        self.total = total
        self.console = console or Console()
        self.done = 0
        self.clock = Clock(total)
        self._bar: Optional[Progress] = None
        self._task: Optional[TaskID] = None

    def __enter__(self) -> "Stages":
        if self.console.is_terminal:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.job, total=self.total)
        return self

    def __call__(self, name: str) -> None:
        stop_if_requested()
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.done, description=f"{self.job}: {name}")
        else:
            emit(f"{self.job}: stage {self.done + 1}/{self.total}: {name}  elapsed {clock(self.clock.elapsed())}")
        self.done += 1

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def print_summary(summary: dict[str, Any]) -> None:
    """The summary of :func:`anyq.sweeping.summary.summarize` as lines and a table."""
    console = wide_console()
    states = summary["trials_by_state"]
    console.print(f"[bold]Study {summary['study_name']}[/]: {sum(states.values())} trials, "
                  + ", ".join(f"{n} {state}" for state, n in states.items()))
    if summary.get("best"):
        best = summary["best"]
        console.print(f"best trial #{best['number']}: {summary['objectives'][0]} = {best['value']:.6g}  "
                      f"{_settings(best['params'])}")
    for point in summary.get("pareto_front", []):
        console.print(f"Pareto trial #{point['number']}: "
                      + ", ".join(f"{o}={significant(v, 5)}" for o, v in zip(summary["objectives"], point["values"]))
                      + f"  {_settings(point['params'])}")
    if summary.get("importances"):
        complete = states.get("COMPLETE", 0)
        table = Table(title="parameter importance" + (f" (from {complete} trials: a rough guide below 10)"
                                                      if complete < 10 else ""))
        table.add_column("parameter")
        table.add_column("importance", justify="right")
        for name, value in summary["importances"].items():
            table.add_row(name, f"{value:.3f}")
        console.print(table)
