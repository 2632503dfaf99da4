"""Checkpoint files of ``anyq-train``: their names, what they carry, and whether one fits a run.

Names: ``best-epoch07.ckpt`` (the best epoch by ``val/crps``; ``best-step001800.ckpt`` under a
step budget) and ``last.ckpt``. They hold
no ``=``, so a path the project prints pastes into ``resume=<path>`` as it is (Hydra reads
``=`` as the key/value separator; a path that holds one, like the ``best-epoch=07.ckpt`` of
older runs, is quoted: ``'resume="outputs/.../best-epoch=07.ckpt"'``, see :func:`override`).

Besides Lightning's own state, every checkpoint carries the run's record so far
(:class:`RunHistory`): the validation metrics of every epoch, the sampler's importance per
epoch, the data fingerprint and the model settings it was trained with
(:func:`model_settings`). Resuming restores that history, so a resumed run's ``evaluation/val_history.json`` still starts at epoch 0, and
:func:`check_fits` refuses, in one line, a checkpoint whose model does not fit the configured
one or (when resuming training) whose data fingerprint is not the configured data's.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback

from anyq.errors import CheckpointError, ConfigError, first_sentence

BEST_FILENAME = "best-epoch{epoch:02d}"  # with auto_insert_metric_name=False: best-epoch07.ckpt
BEST_STEP_FILENAME = "best-step{step:06d}"  # under a step budget: best-step001800.ckpt
_WEIGHTS_PREFIX = "forecaster."
#: the calendar inputs a checkpoint's model takes, among its recorded settings
CALENDAR_INPUTS_SETTING = "data.calendar.inputs"
# characters that end or split an unquoted value in Hydra's override grammar
_NEEDS_QUOTES = re.compile(r"[=,\s'\"\[\]{}()\\$:*?]|^$")


@contextmanager
def own_checkpoint_folder(folder: str | Path) -> Iterator[None]:
    """Hold ``folder`` (a run's ``paths.checkpoints``) for one training run, so that no other
    running job writes its checkpoints there meanwhile (two multiruns started in the same
    second under one ``hydra.sweep.dir`` would otherwise overwrite each other's
    ``best-step*.ckpt`` and test each other's weights). The lock is a file beside the folder
    (``<folder>.lock``) held with ``flock`` by this process; a crashed job releases it.

    Raises:
        ConfigError: another running job holds the folder (one line, before anything trains).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder.with_name(folder.name + ".lock")), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"checkpoint folder {folder} is in use by another running job; give each concurrent job its own "
            "hydra.sweep.dir (or hydra.run.dir, or paths.checkpoints)"
        ) from None
    try:
        yield
    finally:
        lock.release()


def override(key: str, value: str | Path) -> str:
    """``key=value`` as Hydra parses it back to ``value``: quoted when a character needs it.

    Pass the result as one shell word (``'resume="a=b.ckpt"'``); plain paths stay bare.
    """
    text = str(value)
    if not _NEEDS_QUOTES.search(text):
        return f"{key}={text}"
    # Hydra's quoted strings: a backslash is literal unless it precedes a quote or ends the value
    escaped = re.sub(r'(\\+)(?="|$)', lambda m: m.group(1) * 2, text).replace('"', '\\"')
    return f'{key}="{escaped}"'


class RunHistory(Callback):
    """Keeps the per-check record of a run, and carries it inside the run's checkpoints.

    After each validation (the module has logged its ``val/*`` metrics): the metrics with
    ``step`` and ``epoch``, and the sampler's bin probabilities. ``val_history`` and
    ``importance_history`` are the whole run's: the checks restored from the checkpoint a fit
    resumed from (or a test scored), then the checks of this fit.
    """

    def __init__(self, data_fingerprint: str, settings: Mapping[str, Any]) -> None:
        self.data_fingerprint = data_fingerprint
        self.settings = dict(settings)
        self.val_history: list[dict[str, float]] = []
        self._importance: list[list[float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.val_history.append({**logged, "step": float(trainer.global_step), "epoch": float(trainer.current_epoch)})
        sampler = pl_module.forecaster.sampler  # type: ignore[union-attr]
        self._importance.append(sampler.probabilities().detach().double().cpu().tolist())

    @property
    def importance_history(self) -> np.ndarray:
        """Bin probabilities per check, ``[checks, bins]`` (``[0, 0]`` before the first)."""
        return np.asarray(self._importance, dtype=np.float64) if self._importance else np.zeros((0, 0))

    def state_dict(self) -> dict[str, Any]:
        return {
            "val_history": [dict(m) for m in self.val_history],
            "importance_history": [list(p) for p in self._importance],
            "data_fingerprint": self.data_fingerprint,
            "settings": self.settings,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.val_history = [dict(m) for m in state_dict.get("val_history", [])]
        self._importance = [list(p) for p in state_dict.get("importance_history", [])]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, loaded as data only (``weights_only=True``).

    Raises:
        CheckpointError: the file is not a readable Lightning checkpoint.
    """
    try:
        checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        reason = first_sentence(exc)
        raise CheckpointError(f"{path} is not a readable anyq-train checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not an anyq-train checkpoint (no state_dict)")
    return checkpoint


def recorded_history(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """What :class:`RunHistory` stored in ``checkpoint`` ({} for checkpoints without it)."""
    return dict(checkpoint.get("callbacks", {}).get(RunHistory.__qualname__, {}))


def model_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings that decide a model's weights: ``model.*``, the window lengths and the
    calendar inputs it takes (``data.calendar.inputs``, None without a calendar) (flat)."""
    def flat(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value})
        return out

    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model, dict)
    calendar = cfg.data.calendar
    inputs = list(calendar.inputs) if calendar.enabled and calendar.get("inputs") is not None else None
    return {**flat(model, "model."), "data.history_length": cfg.data.history_length,
            "data.horizon_length": cfg.data.horizon_length, CALENDAR_INPUTS_SETTING: inputs}


def check_fits(
    path: str | Path,
    checkpoint: Mapping[str, Any],
    model: torch.nn.Module,
    settings: Mapping[str, Any],
    data_fingerprint: Optional[str],
) -> None:
    """Refuse a checkpoint that does not fit ``model`` or, given one, the data fingerprint.

    Raises:
        CheckpointError: one line naming the first weight whose shape differs (and the model
            settings that differ, when the checkpoint recorded them), or both fingerprints.
    """
    recorded = recorded_history(checkpoint)
    if data_fingerprint is not None and recorded.get("data_fingerprint") not in (None, data_fingerprint):
        raise CheckpointError(
            f"{path} was trained on other data (fingerprint {recorded['data_fingerprint']}, the configured "
            f"data has {data_fingerprint}); resume only on the same data, or drop resume= to start a new run"
        )
    saved = {k[len(_WEIGHTS_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(_WEIGHTS_PREFIX)}
    wanted = model.state_dict()
    problem = None
    defaulted = set(getattr(model, "keys_with_defaults", ()))  # the model fills these in when absent
    for key in sorted(set(saved) | set(wanted)):
        if key not in saved and key in defaulted:
            continue
        if key not in saved or key not in wanted:
            problem = f"weight {key} is {'missing from the checkpoint' if key not in saved else 'not in the model'}"
        elif tuple(saved[key].shape) != tuple(wanted[key].shape):
            problem = f"weight {key} has shape {list(saved[key].shape)} in the checkpoint, {list(wanted[key].shape)} here"
        if problem:
            break
    if problem is None:
        return
    before = recorded.get("settings", {})
    changed = [f"{k}={before[k]} (now {settings.get(k)})" for k in sorted(before) if before[k] != settings.get(k)]
    trained = f"; it was trained with {', '.join(changed[:4])}" if changed else ""
    raise CheckpointError(f"{path} does not fit the configured model: {problem}{trained}")
