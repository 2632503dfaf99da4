"""The side-by-side table that closes ``make run`` and heads every report."""

from __future__ import annotations

from typing import Sequence

from mlflow.entities import Run
from rich.console import Console
from rich.table import Table

from anyq.metrics.families import headline_metric, headline_of

#: Read from each run's headline family (its ``headline`` tag): header, metric name, format.
HEADLINE_COLUMNS = (
    ("headline\nCRPS", "crps", "{:.2f}"),
    ("headline\ncoverage\n90 %", "coverage-0.9", "{:.3f}"),
)
COLUMNS = (
    ("test\nCRPS", "test/crps", "{:.2f}"),
    ("CRPS /\noracle", "test/oracle_ratio", "{:.3f}"),
    ("CRPS\n%", "test/crps_norm", "{:.3f}"),
    ("coverage\n90 %", "test/coverage-0.9", "{:.3f}"),
    ("coverage\n95 %", "test/coverage-0.95", "{:.3f}"),
    ("MARFE", "test/marfe", "{:.4f}"),
    ("MAPE\n%", "test/mape", "{:.2f}"),
    ("Δ CRPS vs\nbaseline\n(− = better)", "delta/crps_vs_baseline", "{:+.2f}"),
    ("train\ns", "train_seconds", "{:.0f}"),
)
UNITS_NOTE = ("CRPS and Δ CRPS in the data's units (negative Δ = lower CRPS than the baseline = better); "
              "coverage: share of targets inside the interval")


def runs_table(runs: Sequence[Run], title: str = "Test scores") -> Table:
    table = Table(title=title, caption=UNITS_NOTE)
    table.add_column("variant")
    table.add_column("headline")
    for header, _, _ in (*HEADLINE_COLUMNS, *COLUMNS):
        table.add_column(header, justify="right")
    table.add_column("run id")
    for run in runs:
        metrics, tags = run.data.metrics, run.data.tags
        values = [headline_metric(tags, metrics, name) for _, name, _ in HEADLINE_COLUMNS]
        cells = [fmt.format(v) if v is not None else "-" for (_, _, fmt), v in zip(HEADLINE_COLUMNS, values)]
        cells += [fmt.format(metrics[key]) if key in metrics else "-" for _, key, fmt in COLUMNS]
        table.add_row(tags.get("variant", "?"), headline_of(tags), *cells, run.info.run_id[:8])
    return table


def wide_console() -> Console:
    """A console that does not squeeze tables to 80 columns when piped or run by make."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def print_runs(runs: Sequence[Run], title: str = "Test scores") -> None:
    wide_console().print(runs_table(runs, title))
