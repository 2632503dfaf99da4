"""What a finished study says: best trial or Pareto front, importances, trials by state.

A plain dict, so that the tracking side records it on the parent run
(:func:`anyq.tracking.study_parent.record_summary`) and the report side prints it
(:func:`anyq.reporting.study_progress.print_summary`) without the engine knowing either.
"""

from __future__ import annotations

import collections
from typing import Any

import optuna
from optuna.trial import TrialState

from anyq.errors import first_line


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
        summary["importances_note"] = first_line(exc)
    return summary
