"""The study ``anyq-confirm <sweep>`` runs (:mod:`anyq.app.confirm`): does the sweep's winner beat the baseline?

A sweep ranks trials by one seed's validation score at a cut budget (pruning). A confirm study
takes the sweep's best trial (for a multi-objective sweep: the Pareto trial best on the first
objective; ``--trial N``, ``confirm.trial=N``, to choose), retrains its configuration (the
``config.yaml`` its run logged: the sweep's recipe, :mod:`anyq.training.recipe`, with the
trial's searched settings) with seeds ``0 .. confirm.seeds-1`` at the full budget instead of
the sweep's cut one: the budget keys (:data:`~anyq.training.recipe.BUDGET_KEYS`) of this
command's own configuration, the main job's 2,000 steps validated every 200 unless given (no
pruning; single settings on the command line apply on top, e.g. ``trainer.max_steps=4000``; a
config group is refused, :func:`command_line_keys`), and trains the baseline adaptive model
with the same seeds and budget where the store has none
(:func:`anyq.tracking.baseline_comparison.ensure_baseline` reuses the rest). The recipe's name
and hash are recorded on the parent run and every run (``recipe``, ``recipe_hash``).

The runs form a study of their own: experiment and study ``<sweep>-confirm``, parent run
tagged with the sweep it came from (``confirm_of``, ``confirm_of_run_id``, ``confirm_trial``).
Its comparison and verdict are the report's (:mod:`anyq.reporting.study_comparison`, verdict by
:mod:`anyq.reporting.verdict`): the relative difference of the seed-mean test CRPS against the
baseline's, with an interval over seeds and test windows; no better/worse with fewer than 3
seeds or for models not trained enough to judge. The verdict is logged on both parent runs and
the sweep's report links to it.
Reruns add only the seeds (configurations) not yet FINISHED under the parent.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict

from anyq.app.job import hydra_overrides, train_tracked
from anyq.errors import ConfigError, SettingError, counted, first_line
from anyq.interrupts import stop_if_requested
from anyq.reporting.figures import render_figures
from anyq.reporting.html import log_report, report_folder, write_report
from anyq.reporting.numbers import significant
from anyq.reporting.study_comparison import StudyComparison, compare_study
from anyq.reporting.study_runs import Artifacts, load_study, objective_of
from anyq.settings import check_settings
from anyq.tracking.baseline import SIGNATURE_TAG, config_signature
from anyq.tracking.recipe_tags import RECIPE_TAG, record_recipe
from anyq.tracking.recording import JobStore
from anyq.tracking.runs import git_commit
from anyq.tracking.source import source_tags
from anyq.tracking.study_parent import (
    CONFIRM_OF_TAG,
    CONFIRM_RUN_TAG,
    CONFIRM_TRIAL_TAG,
    CONFIRM_STUDY_TAG,
    CONFIRM_VERDICT_TAG,
    STUDY_KIND_TAG,
    STUDY_TAG,
    child_runs,
    open_study_parent,
)
from anyq.tracking.trial_runs import TRIAL_NUMBER_TAG
from anyq.training.builders import load_dataset
from anyq.training.validation import validate_config
from anyq.training.recipe import BUDGET_KEYS, DEFAULT_NAME
from anyq.training.run import settle_calendar
from anyq.training.schema import AppConfig, ConfirmConfig

log = logging.getLogger(__name__)
# overrides that say where and how to confirm, not what to train
_OWN_KEYS = ("confirm", "hydra", "paths", "tracking", "trial", "seed")
#: What a confirm study decides itself: each seed trains from the start.
_NOT_FOR_CONFIRM = ("resume", "task")


def confirm_name(sweep: str) -> str:
    return f"{sweep}-confirm"


def chosen_trial(client: MlflowClient, parent: Run, requested: Optional[int]) -> int:
    """The trial to confirm: requested, else the sweep's best, else its Pareto pick."""
    if requested is not None:
        return requested
    tags = parent.data.tags
    if tags.get("best_trial"):
        return int(tags["best_trial"])
    if tags.get("pareto_trials"):
        summary_path = client.download_artifacts(parent.info.run_id, "study_summary.json")
        front = json.loads(Path(summary_path).read_text())["pareto_front"]
        _, direction = objective_of(parent)
        sign = 1.0 if direction == "minimize" else -1.0
        return int(min(front, key=lambda p: sign * p["values"][0])["number"])
    raise ConfigError(f"sweep {tags.get(STUDY_TAG)!r} has no finished best trial yet (run or resume the sweep first)")


def trial_run(client: MlflowClient, parent: Run, number: int) -> Run:
    """The newest FINISHED run of trial ``number``. Raises ConfigError saying what became of the
    trial (its run's status, or no run) and which trials finished."""
    trials = [r for r in child_runs(client, parent) if r.data.tags.get(TRIAL_NUMBER_TAG, "").isdigit()]
    runs = sorted((r for r in trials if r.data.tags[TRIAL_NUMBER_TAG] == str(number)), key=lambda r: r.info.start_time)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if finished:
        return finished[-1]
    what = (f"its run is {runs[-1].data.tags.get('trial_state') or runs[-1].info.status}" if runs
            else "the sweep has no run of it")
    done = sorted({int(r.data.tags[TRIAL_NUMBER_TAG]) for r in trials if r.info.status == "FINISHED"})
    raise ConfigError(f"sweep {parent.data.tags.get(STUDY_TAG)!r}: trial {number} cannot be confirmed ({what}); "
                      f"finished trials: {', '.join(map(str, done)) or 'none'}")


def trial_config(client: MlflowClient, run: Run) -> DictConfig:
    """The trial's logged config (resolved), typed by the schema."""
    path = client.download_artifacts(run.info.run_id, "config.yaml")
    logged = OmegaConf.load(path)
    try:
        return OmegaConf.merge(OmegaConf.structured(AppConfig), logged)  # type: ignore[return-value]
    except Exception as exc:  # noqa: BLE001 - omegaconf raises several kinds
        raise ConfigError(f"run {run.info.run_id}: its config.yaml no longer fits the schema: "
                          f"{first_line(exc)}") from None


def command_line_keys(overrides: list[str], cfg: DictConfig) -> list[str]:
    """The settings the command line gives the confirm runs (budget, data, ...), to copy from
    ``cfg`` onto the trial's config: each override's key but those saying where and how to confirm.

    Raises:
        ConfigError: an override chooses a config group or sets a whole section
            (``trainer=fast``, ``model=nbeats_aq``, ``experiment=guide_full``). The runs retrain
            the trial's logged config under its sweep's recipe (:mod:`anyq.training.recipe`); the
            group's file would replace the trial's settings and the recipe's, not add to them.
            Or it sets ``resume`` or ``task``: every seed is trained from the start.
    """
    keys = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group.lstrip("+~")
        if key in _NOT_FOR_CONFIRM:
            raise ConfigError(f"override {override.input_line!r}: anyq-confirm trains every seed from the start "
                              f"(a rerun trains only the seeds that did not finish), so it takes no {key}=; "
                              f"to score a checkpoint: anyq-train task=test resume=<path>", (key,))
        if key.split(".")[0].split("/")[0] in _OWN_KEYS:
            continue
        # a group's choice names a section (trainer=, model/attention=) or no key at all (experiment=)
        if isinstance(OmegaConf.select(cfg, key.replace("/", "."), default=cfg), DictConfig):
            raise ConfigError(f"override {override.input_line!r}: anyq-confirm retrains the sweep's trial under the "
                              f"sweep's recipe, so it takes single settings (e.g. trainer.max_steps=4000), not a "
                              f"config group, whose file would replace the trial's settings", (key,))
        keys.append(key)
    return keys


def full_budget(base: DictConfig, cfg: DictConfig) -> None:
    """Give ``base`` (a trial's config, at the sweep's cut budget) the budget of ``cfg`` (this
    command's configuration: the main job's unless the command line says otherwise)."""
    for key in BUDGET_KEYS:
        OmegaConf.update(base, key, OmegaConf.select(cfg, key), merge=False)


def seed_config(base: DictConfig, cfg: DictConfig, seed: int, experiment: str, parent_run_id: str,
                sweep: str, number: int, recipe: str = DEFAULT_NAME) -> DictConfig:
    """The trial's config for one seed, tracked under the confirm study (``recipe``: the
    name of the sweep's recipe, which its runs record)."""
    out = OmegaConf.create(OmegaConf.to_container(base, resolve=True))
    with open_dict(out):
        out.seed = seed
        out.paths = OmegaConf.create(OmegaConf.to_container(cfg.paths, resolve=True))
        out.paths.output_dir = str(Path(cfg.paths.output_dir) / f"seed{seed}")
        out.paths.checkpoints = str(Path(out.paths.output_dir) / "checkpoints")
        out.tracking = OmegaConf.create(OmegaConf.to_container(cfg.tracking, resolve=True))
        out.tracking.experiment = experiment
        out.tracking.parent_run_id = parent_run_id
        out.tracking.compare_to_baseline = True
        out.tracking.run_name = f"{base.model.variant}-trial{number}-seed{seed}"
        out.tracking.tags = {**cfg.tracking.tags, CONFIRM_OF_TAG: sweep, CONFIRM_TRIAL_TAG: str(number),
                             RECIPE_TAG: recipe}
        out.trial = {"study_name": None, "storage": None, "number": None}
        out.confirm = {"study": None, "seeds": cfg.confirm.seeds, "trial": None}
        out.resume = None
    return out


def verdict_of(comparison: StudyComparison) -> dict[str, Any]:
    """The confirm study's answer: the group's verdict, with its interval, and the interval over seeds."""
    group = next(g for g in comparison.groups if g != comparison.baseline)
    pair = comparison.paired.loc[group]
    return {
        "group": group,
        "verdict": str(pair["verdict"]),
        "reason": str(pair["reason"]),
        "p_value": float(pair["p_adjusted"]),
        "delta_crps": float(pair["mean_difference"]),
        "relative_difference": float(pair["relative_difference"]),
        "relative_ci_low": float(pair["ci_low"]),
        "relative_ci_high": float(pair["ci_high"]),
        "seeds": int(comparison.runs["group"].eq(group).sum()),
        "crps_mean": comparison.stat(group, "test/crps"),
        "crps_ci_low": comparison.stat(group, "test/crps", "ci_low"),
        "crps_ci_high": comparison.stat(group, "test/crps", "ci_high"),
        "baseline_crps_mean": comparison.stat(comparison.baseline, "test/crps"),
        "sentence": comparison.verdicts()[0],
    }


def record_verdict(client: MlflowClient, parent_id: str, sweep_parent_id: str, name: str,
                   verdict: dict[str, Any]) -> None:
    client.set_tag(parent_id, "verdict", verdict["verdict"])
    for key in ("p_value", "delta_crps", "relative_difference", "relative_ci_low", "relative_ci_high", "crps_mean",
                "crps_ci_low", "crps_ci_high"):
        if math.isfinite(verdict[key]):
            client.log_metric(parent_id, f"confirm/{key}", verdict[key])
    client.log_dict(parent_id, verdict, "confirm_verdict.json")
    client.set_tag(sweep_parent_id, CONFIRM_STUDY_TAG, name)
    client.set_tag(sweep_parent_id, CONFIRM_RUN_TAG, parent_id)
    client.set_tag(sweep_parent_id, CONFIRM_VERDICT_TAG, verdict["sentence"][:4000])


def report_dir(root: str, study_name: str) -> Path:
    return Path(root) / "reports" / report_folder(study_name)


def crps_line(verdict: dict[str, Any]) -> str:
    """The confirm study's test CRPS over seeds with its interval (none from one seed), and the
    baseline's, in data units."""
    low, high = verdict["crps_ci_low"], verdict["crps_ci_high"]
    interval = ("no interval from one seed" if math.isnan(low)
                else f"95 % CI {significant(low, 5)} .. {significant(high, 5)}")
    seeds = counted(verdict["seeds"], "seed")
    return (f"test CRPS over {seeds}: {significant(verdict['crps_mean'], 5)} ({interval}); "
            f"baseline {significant(verdict['baseline_crps_mean'], 5)}")


def run_confirm(cfg: DictConfig, uri: str, client: MlflowClient, sweep_parent: Run) -> dict[str, Any]:
    """Train the missing seeds of the confirm study of the sweep whose parent run is
    ``sweep_parent`` (in the store ``uri``, :func:`anyq.app.confirm.find_sweep`), then compare;
    returns the verdict."""
    sweep = str(cfg.confirm.study)
    try:  # the declared ranges of confirm.* (the trial's own config is validated below)
        check_settings(ConfirmConfig, cfg.confirm, "confirm.")
    except SettingError as exc:
        raise ConfigError(str(exc), exc.keys) from None
    keys = command_line_keys(hydra_overrides(), cfg)
    mlruns = Path(cfg.paths.mlruns)
    number = chosen_trial(client, sweep_parent, cfg.confirm.trial)
    source = trial_run(client, sweep_parent, number)
    base = trial_config(client, source)
    full_budget(base, cfg)
    for key in keys:
        OmegaConf.update(base, key, OmegaConf.select(cfg, key), merge=False)
    validate_config(base)
    recipe = source.data.tags.get(RECIPE_TAG) or sweep_parent.data.tags.get(RECIPE_TAG) or DEFAULT_NAME
    name = confirm_name(sweep)
    study = open_study_parent(uri, mlruns, name, name, {
        STUDY_KIND_TAG: "confirm", CONFIRM_OF_TAG: sweep, "confirm_of_run_id": sweep_parent.info.run_id,
        "confirm_trial_run_id": source.info.run_id, **source_tags(git_commit(cfg.paths.root)),
    }, select={CONFIRM_TRIAL_TAG: str(number)})  # another trial (a resumed sweep's new best): a parent of its own
    parent_id = study.run_id
    failures = 0
    with study.lifecycle() as parent_run:  # KILLED on a signal, FAILED on an error
        recipe_hash = record_recipe(client, parent_id, base, recipe)["recipe_hash"]
        store = JobStore(client, uri, study.experiment_id, mlruns)
        done = {r.data.tags.get(SIGNATURE_TAG) for r in child_runs(client, study.run(), "FINISHED")}
        dataset = load_dataset(base.data)
        base = settle_calendar(base, dataset)  # the trial's own inputs, as its config names them
        seeds = [seed_config(base, cfg, s, name, parent_id, sweep, number, recipe) for s in range(cfg.confirm.seeds)]
        todo = [s for s in seeds if config_signature(s, dataset.fingerprint) not in done]
        t = base.trainer
        budget = f"{t.max_epochs} epochs" if t.max_epochs is not None else \
            f"{t.max_steps} steps validated every {t.val_check_interval}"
        print(f"Confirm trial {number} of sweep {sweep!r} ({source.data.tags.get('variant')}, recipe {recipe} "
              f"{recipe_hash}, {budget}): {len(todo)} of {len(seeds)} seeds to train, "
              f"study {name!r}, parent run {parent_id}", flush=True)
        for i, seed_cfg in enumerate(todo, 1):
            stop_if_requested()  # between seeds: no run is cut half-way
            try:
                train_tracked(seed_cfg, dataset, store, None, compare=True)
            except Exception as exc:  # noqa: BLE001 - the run is recorded FAILED; other seeds go on
                failures += 1
                log.warning("seed %d failed: %s", seed_cfg.seed, exc)
            print(f"confirm {name}: seeds {len(seeds) - len(todo) + i}/{len(seeds)} done", flush=True)
        if failures:
            parent_run.conclude("FAILED", f"{failures} of {len(todo)} seeds failed")
    parent = client.get_run(parent_id)
    with Artifacts(uri) as artifacts:
        comparison = compare_study(load_study(client, uri, parent), artifacts)
        out = report_dir(cfg.paths.root, name)
        figures = render_figures(comparison, artifacts, out)
    write_report(comparison, figures, out)
    log_report(client, parent_id, out, comparison)
    verdict = verdict_of(comparison)
    record_verdict(client, parent_id, sweep_parent.info.run_id, name, verdict)
    print(verdict["sentence"], flush=True)
    print(crps_line(verdict), flush=True)
    print(f"Report: {out / 'index.html'}", flush=True)
    return {**verdict, "trained": len(todo), "failed": failures, "parent_run_id": parent_id}
