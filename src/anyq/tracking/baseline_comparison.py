"""A run against its baseline: find (or have trained) the baseline run, then record the deltas.

The comparison comes after the model's own run is closed, so the baseline is never trained
inside it, and a baseline that cannot train (say, the same NaN-producing learning rate)
leaves the model's run FINISHED with the reason under ``baseline_error``. The training itself
is the caller's (``train``): this layer only decides whether it is needed.

Jobs of one machine share a lock per baseline signature: a job that trains a baseline holds
it (a baseline job for its whole run, :func:`own_baseline_lock`; a comparison while it trains
the missing baseline), so a job beside it waits and reuses that run instead of training a
second one (``make run`` trains the baseline and a model side by side).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Callable, Mapping

from filelock import FileLock
from omegaconf import DictConfig

from anyq.errors import first_line
from anyq.tracking.baseline import baseline_config, config_signature, deltas, find_baseline_run, is_baseline
from anyq.tracking.recording import JobStore
from anyq.tracking.runs import RunRecord
from anyq.tracking.trial_runs import OPENED_BY_TRIAL_TAG, trial_key
from anyq.tracking.view import DELTA_TAG, delta_text

log = logging.getLogger(__name__)
BASELINE_RUN_TAG = "baseline_run_id"
BASELINE_ERROR_TAG = "baseline_error"
TrainFn = Callable[[DictConfig], Any]


def baseline_lock(store: JobStore, signature: str) -> FileLock:
    return store.lock(f"baseline-{signature}")


def own_baseline_lock(cfg: DictConfig, data_fingerprint: str, store: JobStore) -> AbstractContextManager[Any]:
    """The signature lock when ``cfg`` is itself a baseline (held while it trains), else nothing."""
    if not is_baseline(cfg):
        return nullcontext()
    return baseline_lock(store, config_signature(cfg, data_fingerprint))


def baseline_job_config(cfg: DictConfig) -> DictConfig:
    """The baseline of ``cfg`` as a job of its own: outputs under ``<output dir>/baseline``,
    tagged ``role=baseline`` and, trained by a trial's job, with the trial that opened it
    (:data:`OPENED_BY_TRIAL_TAG`: the sweep closes it if that trial's worker dies)."""
    base = baseline_config(cfg)
    out = Path(cfg.paths.output_dir) / "baseline"
    base.paths.output_dir = str(out)
    base.paths.checkpoints = str(out / "checkpoints")
    tags = {**base.tracking.tags, "role": "baseline"}
    if cfg.trial.number is not None and cfg.tracking.parent_run_id:
        tags[OPENED_BY_TRIAL_TAG] = trial_key(cfg.tracking.parent_run_id, cfg.trial.number)
    base.tracking.tags = tags
    return base


def ensure_baseline(cfg: DictConfig, data_fingerprint: str, store: JobStore, train: TrainFn) -> dict[str, Any]:
    """The test metrics and ``run_id`` of ``cfg``'s baseline run: a FINISHED matching run of the
    store, or one trained now by ``train(baseline config)`` (once, even with parallel jobs).

    Raises:
        whatever ``train`` raises; RuntimeError when it returned without a FINISHED run.
    """
    base_cfg = baseline_job_config(cfg)
    signature = config_signature(base_cfg, data_fingerprint)
    with baseline_lock(store, signature):
        run = find_baseline_run(store.client, signature, data_fingerprint)
        if run is None:
            log.info("No finished baseline run with signature %s: training it", signature)
            train(base_cfg)
            run = find_baseline_run(store.client, signature, data_fingerprint)
            if run is None:
                raise RuntimeError(f"the baseline run with signature {signature} did not finish")
        else:
            log.info("Reusing baseline run %s", run.info.run_id)
    return {**run.data.metrics, "run_id": run.info.run_id}


def compare_with_baseline(cfg: DictConfig, data_fingerprint: str, store: JobStore, run_id: str,
                          metrics: Mapping[str, float], train: TrainFn) -> None:
    """Record on the (closed) run ``run_id`` its ``delta/*`` metrics against the baseline and the
    tag ``baseline_run_id``; or, when the baseline cannot be had, the tag ``baseline_error``."""
    record = RunRecord(store.client, run_id)
    try:
        baseline = ensure_baseline(cfg, data_fingerprint, store, train)
    except Exception as exc:  # noqa: BLE001 - the model's own run stands
        log.warning("baseline failed: %s", exc)
        record.set_tags({BASELINE_ERROR_TAG: first_line(exc, with_type=True)})
        return
    differences = deltas(dict(metrics), baseline)
    record.log_metrics(differences)
    shown = delta_text(differences)  # rounded, for MLflow's saved view
    record.set_tags({BASELINE_RUN_TAG: baseline["run_id"], **({DELTA_TAG: shown} if shown else {})})
