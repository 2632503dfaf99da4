"""The side-by-side table that closes ``make run`` and heads every report.

It fits an 80-column terminal for the main job's two variants: short headers, explained by
the legend below the table, and the scores a run is judged by (the headline family's CRPS and
coverage, the model's own forecast's, the difference to the baseline, the training time);
the HTML report and MLflow keep every other score (normalised CRPS, MARFE, MAPE, ...).
"""

from __future__ import annotations

from typing import Optional, Sequence

from mlflow.entities import Run
from rich import box
from rich.console import Console
from rich.table import Table

from anyq.metrics.families import RAW, headline_metric, headline_of

#: CRPS-scale columns are written with the table's decimal places (``{1}``, :func:`places`).
CRPS_FORMAT, DELTA_FORMAT = "{0:.{1}f}", "{0:+.{1}f}"
#: Read from each run's headline family (its ``headline`` tag): header, metric name, format.
HEADLINE_COLUMNS = (
    ("hl\nCRPS", "crps", CRPS_FORMAT),
    ("hl\ncov90", "coverage-0.9", "{0:.3f}"),
)
COLUMNS = (
    ("test\nCRPS", "test/crps", CRPS_FORMAT),
    ("test\noracle", "test/oracle_ratio", "{0:.3f}"),
    ("test\ncov90", "test/coverage-0.9", "{0:.3f}"),
    ("test\ncov95", "test/coverage-0.95", "{0:.3f}"),
    ("test\nΔ CRPS", "delta/crps_vs_baseline", DELTA_FORMAT),
    ("train\ns", "train_seconds", "{0:.0f}"),
)
UNITS_NOTE = ("oracle: test CRPS / the oracle's (1 is the floor); CRPS and Δ CRPS in the data's units, "
              "Δ CRPS = test CRPS − the baseline's (negative = better); cov90, cov95: share of targets inside "
              "the 90 %, 95 % interval. More scores (CRPS %, MARFE, MAPE): the report.")


def legend(families: Sequence[str]) -> str:
    """The lines below the table: what ``hl`` and ``test`` are for ``families`` (the runs'
    headline families, :mod:`anyq.metrics.families`), then :data:`UNITS_NOTE`."""
    if list(families) == [RAW]:
        return f"test: the model's own forecast, each run's headline; {UNITS_NOTE}"
    headline = (f"the headline forecast ({families[0]})" if len(families) == 1
                else "each run's headline forecast (column headline)")
    return f"hl: {headline}; test: the model's own; {UNITS_NOTE}"


def places(crps: Sequence[float], digits: int = 5) -> int:
    """Decimal places that show the largest of ``crps`` with ``digits`` significant digits in
    fixed point (123.46, 2439.6, 12346), so the CRPS columns stay narrow on any data's scale."""
    largest = max((abs(v) for v in crps), default=0.0)
    return max(0, digits - len(str(int(largest))))


def runs_table(runs: Sequence[Run], title: str = "Test scores") -> Table:
    """One row per run. The ``hl`` columns read each run's headline family; they are left out
    when that family is ``test`` for every run (they would repeat the ``test`` columns), and a
    ``headline`` column names each run's family and a ``seed`` column each run's seed, each
    only when the runs differ in it."""
    families = sorted({headline_of(run.data.tags) for run in runs})
    headline_columns = () if families == [RAW] else HEADLINE_COLUMNS
    rows: list[list[Optional[float]]] = []
    for run in runs:
        metrics, tags = run.data.metrics, run.data.tags
        rows.append([headline_metric(tags, metrics, name) for _, name, _ in headline_columns]
                    + [metrics.get(key) for _, key, _ in COLUMNS])
    columns = (*headline_columns, *COLUMNS)
    decimals = places([v for row in rows for (_, _, fmt), v in zip(columns, row)
                       if fmt == CRPS_FORMAT and v is not None])
    table = Table(title=title, caption=legend(families), caption_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, padding=(0, 0))
    seeds = len({run.data.tags.get("seed") for run in runs}) > 1  # a study's seeds: which row is which
    table.add_column("\nvariant")
    if seeds:
        table.add_column("\nseed", justify="right")
    if len(families) > 1:
        table.add_column("\nheadline")
    for header, _, _ in columns:
        table.add_column(header, justify="right")
    table.add_column("\nrun id")
    for run, row in zip(runs, rows):
        tags = run.data.tags
        cells = [fmt.format(v, decimals) if v is not None else "-" for (_, _, fmt), v in zip(columns, row)]
        seed = [tags.get("seed", "-")] if seeds else []
        family = [headline_of(tags)] if len(families) > 1 else []
        table.add_row(tags.get("variant", "?"), *seed, *family, *cells, run.info.run_id[:8])
    return table


def wide_console() -> Console:
    """A console that does not squeeze tables to 80 columns when piped or run by make."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def print_runs(runs: Sequence[Run], title: str = "Test scores") -> None:
    """:func:`runs_table` of ``runs``, one table per data set when they were scored on several
    (their ``data_fingerprint`` tags): scores of other data share neither a scale nor a baseline."""
    by_data: dict[str, list[Run]] = {}
    for run in runs:
        by_data.setdefault(run.data.tags.get("data_fingerprint", "?"), []).append(run)
    console = wide_console()
    for fingerprint, group in by_data.items():
        data = f"{title}, data {group[0].data.tags.get('dataset', '?')} (fingerprint {fingerprint})"
        console.print(runs_table(group, title if len(by_data) == 1 else data))
