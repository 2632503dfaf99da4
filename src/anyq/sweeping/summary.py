"""What a finished study says: best trial or Pareto front, importances, trials by state."""

from __future__ import annotations

import collections
import json
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table


def summarize(study: optuna.Study, objectives: list[str]) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    states = collections.Counter(t.state.name for t in trials)
    summary: dict[str, Any] = {
        "study_name": study.study_name,
        "directions": [d.name.lower() for d in study.directions],
        "objectives": objectives,
        "trials_by_state": dict(states),
    }
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        summary["best"] = None
        return summary
    if len(study.directions) == 1:
        best = study.best_trial
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params}
    else:
        summary["pareto_front"] = [
            {"number": t.number, "values": t.values, "params": t.params} for t in study.best_trials
        ]
    try:
        importances = optuna.importance.get_param_importances(study, target=(
            None if len(study.directions) == 1 else (lambda t: t.values[0])))
        summary["importances"] = {k: float(v) for k, v in importances.items()}
    except (RuntimeError, ValueError) as exc:  # too few trials, or a constant parameter
        summary["importances"] = {}
        summary["importances_note"] = str(exc).splitlines()[0]
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    console = Console() if Console().is_terminal else Console(width=200)
    console.print(f"[bold]Study {summary['study_name']}[/]  trials by state: {summary['trials_by_state']}")
    if summary.get("best"):
        best = summary["best"]
        console.print(f"best trial #{best['number']}: {summary['objectives'][0]} = {best['value']:.6g}")
        console.print(f"best params: {best['params']}")
    for point in summary.get("pareto_front", []):
        console.print(f"Pareto trial #{point['number']}: "
                      + ", ".join(f"{o}={v:.5g}" for o, v in zip(summary["objectives"], point["values"]))
                      + f"  {point['params']}")
    if summary.get("importances"):
        table = Table(title="parameter importance")
        table.add_column("parameter")
        table.add_column("importance", justify="right")
        for name, value in summary["importances"].items():
            table.add_row(name, f"{value:.3f}")
        console.print(table)


def record_summary(client: MlflowClient, parent_run_id: str, summary: dict[str, Any]) -> None:
    """Log the summary on the parent run and tag the winning trial runs under it."""
    client.log_dict(parent_run_id, summary, "study_summary.json")
    for state, count in summary["trials_by_state"].items():
        client.log_metric(parent_run_id, f"trials/{state.lower()}", count)
    winners: list[int] = []
    if summary.get("best"):
        best = summary["best"]
        client.log_metric(parent_run_id, "best_value", best["value"])
        client.set_tag(parent_run_id, "best_trial", str(best["number"]))
        client.set_tag(parent_run_id, "best_params", json.dumps(best["params"]))
        winners = [best["number"]]
    if summary.get("pareto_front"):
        winners = [p["number"] for p in summary["pareto_front"]]
        client.set_tag(parent_run_id, "pareto_trials", json.dumps(winners))
    for name, value in summary.get("importances", {}).items():
        client.log_metric(parent_run_id, f"importance/{name}", value)
    run = client.get_run(parent_run_id)
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
                                  max_results=10000)
    for child in children:
        number = child.data.tags.get("optuna.trial_number")
        if number is not None and int(number) in winners:
            client.set_tag(child.info.run_id, "best_trial", "true")
