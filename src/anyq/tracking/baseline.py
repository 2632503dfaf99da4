"""Match every run with the baseline adaptive model trained on the same data, seed and budget.

A run's *signature* hashes everything that decides its numbers except the tracking and
output settings: the data settings and the data's content (its fingerprint), model,
optimiser, budget and seed. A run's *baseline* (:func:`baseline_config`) is the run's config
with the settings of :data:`FROM_BASELINE_VARIANT` taken from the baseline variant as
``conf/model/baseline_adaptive.yaml`` composes it (so every trial of a sweep over
``model.sampler.*`` has the same one), the bookkeeping of :data:`BASELINE_RESETS` reset, and
everything else (data, seed, optimiser, budget, evaluation, backbone, monotone, conformal)
shared with the run. Its signature is recorded on the run (:data:`BASELINE_SIGNATURE_TAG`,
with :func:`baseline_tags`); a finished run whose signature equals another run's baseline
signature is that run's baseline, wherever it lives in the tracking store.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Optional

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from anyq.data.calendar import INPUTS
from anyq.training.config_tree import BASELINE_VARIANT, compose_model

_BUDGET_KEYS = (
    "max_epochs", "max_steps", "val_check_interval", "limit_train_batches", "limit_val_batches", "limit_test_batches",
    "gradient_clip_val", "accumulate_grad_batches", "precision", "fast_dev_run",
)
#: Budget keys added after stores existed: in the signature only when set, so older runs keep theirs.
_BUDGET_KEYS_IF_SET = ("ema_decay",)
#: The averaging's decay warm-up (anyq.training.averaging): in the signature of every averaged run,
#: so a run averaged without it (an older store's) is not taken for one averaged with it.
EMA_WARMUP = "min(decay, (1 + t) / (10 + t))"
SIGNATURE_TAG = "config_signature"
BASELINE_SIGNATURE_TAG = "baseline_signature"
#: The top-level keys whose values a signature hashes (:func:`config_signature`).
SIGNED = ("data", "model", "optim", "trainer", "evaluation", "seed")
#: Tags naming the baseline variant and the settings the baseline takes from it.
BASELINE_VARIANT_TAG = "baseline_variant"
BASELINE_OWN_TAG = "baseline_own_settings"

#: The model settings a baseline takes at the baseline variant's configured values, not the run's.
FROM_BASELINE_VARIANT: tuple[str, ...] = ("variant", "sampler", "attention")
#: Bookkeeping that makes the baseline its own training run, not a trial of the run's study.
BASELINE_RESETS: dict[str, Any] = {
    "trial": {"study_name": None, "storage": None, "number": None},
    "tracking.parent_run_id": None,
    "tracking.run_name": None,
    "resume": None,
    "task": "train",
}


def baseline_config(cfg: DictConfig) -> DictConfig:
    """The run's baseline: ``cfg`` (resolved) with ``model.variant``, ``model.sampler`` and
    ``model.attention`` as ``conf/model/baseline_adaptive.yaml`` composes them and the
    bookkeeping of :data:`BASELINE_RESETS` reset; every other setting is the run's."""
    base = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    variant = compose_model(BASELINE_VARIANT)
    for key in FROM_BASELINE_VARIANT:
        base.model[key] = variant[key]
    for key, value in BASELINE_RESETS.items():
        OmegaConf.update(base, key, value, merge=False)
    return base


def baseline_signature(cfg: DictConfig, data_fingerprint: str) -> str:
    """The signature of ``cfg``'s baseline, read from the sections a signature hashes
    (:data:`SIGNED`), each resolved on its own: a sweep's own config also holds ``hydra`` and
    paths that resolve only inside a job."""
    signed = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
              for key in SIGNED}
    return config_signature(baseline_config(OmegaConf.create(signed)), data_fingerprint)


def baseline_tags(cfg: DictConfig, data_fingerprint: str) -> dict[str, str]:
    """Tags recording a run's baseline: its signature, the variant, and the model settings
    it takes from that variant (the rest it shares with the run)."""
    return {
        BASELINE_SIGNATURE_TAG: baseline_signature(cfg, data_fingerprint),
        BASELINE_VARIANT_TAG: BASELINE_VARIANT,
        BASELINE_OWN_TAG: ",".join(f"model.{key}" for key in FROM_BASELINE_VARIANT),
    }


def config_signature(cfg: DictConfig, data_fingerprint: str) -> str:
    """16 hex digits of everything that decides the run's numbers, the data's content included
    (``data_fingerprint``): the same file name with other values is other data."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    model = dict(container["model"])
    if not model["attention"]["enabled"]:
        model["attention"] = {"enabled": False}  # attention knobs do not change a model without it
    trainer = container["trainer"]
    payload = {
        "data": _data(container["data"]),
        "data_fingerprint": data_fingerprint,
        "model": model,
        "optim": container["optim"],
        "trainer": _budget(trainer),
        "evaluation": container["evaluation"]["num_levels"],
        "seed": container["seed"],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _data(data: dict[str, Any]) -> dict[str, Any]:
    """The data settings; ``calendar.inputs`` only when it leaves an input out, so runs that take
    every calendar input (all runs before the key existed) keep their signatures."""
    calendar = dict(data.get("calendar") or {})
    inputs = calendar.pop("inputs", None)
    if calendar.get("enabled") and inputs is not None and set(inputs) != set(INPUTS):
        calendar["inputs"] = sorted(inputs, key=INPUTS.index)
    return {**data, "calendar": calendar} if "calendar" in data else dict(data)


def _budget(trainer: dict[str, Any]) -> dict[str, Any]:
    """The trainer settings that decide the numbers; later additions only when they are on."""
    out = {k: trainer[k] for k in _BUDGET_KEYS} | {k: trainer[k] for k in _BUDGET_KEYS_IF_SET
                                                   if trainer.get(k) is not None}
    if trainer.get("ema_decay") is not None:
        out["ema_warmup"] = EMA_WARMUP
    stopping = trainer.get("early_stopping") or {}
    if stopping.get("enabled"):  # stopping early changes which steps were trained
        out["early_stopping"] = stopping
    return out


def is_baseline(cfg: DictConfig) -> bool:
    return config_signature(cfg, "") == config_signature(baseline_config(cfg), "")


def find_baseline_run(client: MlflowClient, signature: str, data_fingerprint: str) -> Optional[Run]:
    """The newest FINISHED training run with this signature and data fingerprint, in any
    experiment of the store (a ``task=test`` run scores another run's weights: never one)."""
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return None
    runs = client.search_runs(
        experiment_ids,
        filter_string=(f"tags.{SIGNATURE_TAG} = '{signature}' and tags.data_fingerprint = '{data_fingerprint}'"
                       " and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"],
        max_results=10,
    )
    trained = [run for run in runs if is_training_run(run.data.tags)]
    return trained[0] if trained else None


def is_training_run(tags: Mapping[str, str]) -> bool:
    """A run that trained its model (tag ``task=train``, the default), not one that scored a
    checkpoint (``task=test``): only such a run serves as a baseline or is listed as trained."""
    return tags.get("task", "train") == "train"


def deltas(metrics: dict[str, float], baseline: dict[str, Any]) -> dict[str, float]:
    """Differences of the run's test scores from its baseline's (negative CRPS delta = better)."""
    out = {
        "delta/crps_vs_baseline": metrics["test/crps"] - baseline["test/crps"],
        "delta/coverage-0.9_vs_baseline": metrics["test/coverage-0.9"] - baseline["test/coverage-0.9"],
    }
    if baseline["test/crps"]:
        out["delta/crps_ratio_vs_baseline"] = metrics["test/crps"] / baseline["test/crps"]
    if "test/coverage-0.95" in baseline and "test/coverage-0.95" in metrics:
        out["delta/coverage-0.95_vs_baseline"] = metrics["test/coverage-0.95"] - baseline["test/coverage-0.95"]
    return out
