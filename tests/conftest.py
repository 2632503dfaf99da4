"""Shared fixtures: configs composed in-process through Hydra's compose API, tiny budgets."""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from anyq.app.paths import config_dir
from anyq.tracking import store
from anyq.training.schema import register_configs

register_configs()

#: Set (by .ci/run, or `make test-all`) to run the tests marked ``integration``.
INTEGRATION_ENV = "ANYQ_INTEGRATION"


def integration_enabled(environ: dict[str, str] | os._Environ[str]) -> bool:
    """Whether ``environ`` switches the ``integration`` tests on: ``$ANYQ_INTEGRATION`` set to
    anything but empty or ``0``."""
    return environ.get(INTEGRATION_ENV, "0") not in ("", "0")


#: The reason the ``integration`` tests are skipped with, shown by ``-ra``.
INTEGRATION_SKIP = f"integration: {INTEGRATION_ENV}=1 runs it (`make test-all`; .ci/run does)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``integration`` tests (their own PostgreSQL + MLflow server, Ray head, Submitit
    jobs, or a browser installed as root) unless :func:`integration_enabled`: CI sets it."""
    if integration_enabled(os.environ):
        return
    skip = pytest.mark.skip(reason=INTEGRATION_SKIP)
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty local store as ``anyq.tracking.store.ensure_store`` leaves it (MLflow's tables
    created, its Default experiment), made once per test process."""
    mlruns = tmp_path_factory.mktemp("empty-store")
    store.ensure_store(f"sqlite:///{mlruns / 'mlflow.db'}", mlruns)
    return mlruns / "mlflow.db"


@pytest.fixture(autouse=True)
def stores_from_a_copy(empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a job in this process would have MLflow create a new local store, it gets a copy of
    :func:`empty_store` instead: MLflow runs its ~50 schema migrations on every new SQLite file
    (about 2 s each time, a tenth of the suite). Only the creation is shortened: the store is
    created at the same moment, under the same lock, and nothing is written where the code
    would not write. Jobs in child processes still create theirs through MLflow."""
    def client(tracking_uri: str) -> store.MlflowClient:
        path = store.local_store_path(tracking_uri) if store.is_local_sqlite(tracking_uri) else None
        if path is not None and not path.exists():
            try:
                with contextlib.closing(sqlite3.connect(empty_store)) as source, \
                        contextlib.closing(sqlite3.connect(path)) as target:
                    source.backup(target)
            except (sqlite3.Error, OSError):  # an unwritable folder: MLflow meets it as it would
                path.unlink(missing_ok=True)
        return mlflow_client_class(tracking_uri=tracking_uri)

    mlflow_client_class = store.MlflowClient
    monkeypatch.setattr(store, "MlflowClient", client)

# A model and data small enough for a CPU test, with the real code paths.
TINY = [
    "trainer=fast",
    "data.synthetic.n_series=3",
    "data.synthetic.years=1",
    "data.train_step=24",
    "data.train_batch_size=64",
    "data.eval_batch_size=512",
    "model.backbone.num_blocks=2",
    "model.backbone.layer_width=32",
    "model.attention.d_model=16",
    "model.attention.n_heads=2",
    "model.attention.d_ff=32",
    "model.attention.num_blocks=1",
    "evaluation.num_levels=39",
    "evaluation.val_num_levels=39",
    "optim.warmup_updates=5",
]

# An ablation of two variants (x the seeds a test gives) at the TINY budget: one short epoch,
# no model artifact; the sweeper's own lists are replaced on the command line.
ABLATION = ["-m", "ablation=variants", *TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1", "tracking.log_model=false",
            'hydra.sweeper.params.model="baseline_adaptive,adaptive_attention"']

# A step budget of a whole (tiny) epoch per stage: 6 optimiser steps, validated every 3.
STEP_BUDGET = ["trainer.max_epochs=null", "trainer.max_steps=6", "trainer.val_check_interval=3",
               "trainer.limit_train_batches=1.0", "trainer.limit_val_batches=1.0", "trainer.limit_test_batches=1.0"]

ComposeFn = Callable[..., DictConfig]


def compose_config(root: Path, overrides: list[str], *, job: str = "run") -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, f"paths.root={root}", *overrides],
                      return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "outputs" / job)
        del cfg["hydra"]
    return cfg


@pytest.fixture
def compose_cfg(tmp_path: Path) -> ComposeFn:
    counter = iter(range(1000))

    def _compose(*overrides: str) -> DictConfig:
        return compose_config(tmp_path, list(overrides), job=f"job{next(counter)}")

    yield _compose
    GlobalHydra.instance().clear()


def run_cli(root: Path, *argv: str) -> None:
    """``anyq-train`` in-process, as the console script would run it (``-m`` included)."""
    from anyq.app import train

    GlobalHydra.instance().clear()
    old = sys.argv
    sys.argv = ["anyq-train", *argv, f"paths.root={root}"]
    try:
        train.main()
    finally:
        sys.argv = old
        GlobalHydra.instance().clear()


def run_report(*argv: str) -> str:
    """``anyq-report`` in-process; what it printed."""
    from anyq.app import report

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        report.main(list(argv))
    return out.getvalue()


def small_csv(path: Path) -> Path:
    """A long-format file (``unique_id``, ``ds``, ``y``): two hourly series, 2021-01-01 to
    2021-03-31, a daily cycle plus noise (levels 100 and 130, data units)."""
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2021-01-01", "2021-03-31 23:00", freq="h")
    t = np.arange(len(stamps))
    pd.concat([pd.DataFrame({"unique_id": f"s{k}", "ds": stamps,
                             "y": 100 + 30 * k + 20 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 3, len(t))})
               for k in range(2)]).to_csv(path, index=False)
    return path
