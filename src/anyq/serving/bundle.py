"""A trained forecaster ready to answer requests: its weights plus the config that builds it.

A bundle is two files, the way a served model carries them: ``weights.pt`` (the
forecaster's ``state_dict``, sampler state included, because the attention's importance
modulation reads it at inference; no optimiser state) and ``forecaster.yaml`` (the resolved
model config and window lengths). Both load without the training stack or the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from anyq.data.calendar import CalendarSpec, spec_from_config, window_calendar
from anyq.errors import first_sentence
from anyq.model.forecaster import AnyQuantileForecaster, forecaster_from_config
from anyq.serving.errors import ModelFileError, RequestError

SPEC_FORMAT = "anyq-forecaster/1"
WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "forecaster.yaml"
#: Prefix of the forecaster's parameters in a Lightning checkpoint of ForecastingModule.
CHECKPOINT_PREFIX = "forecaster."
#: (window, level) pairs per forward call: bounds memory for large requests.
MAX_PAIRS_PER_CALL = 65536


@dataclass(frozen=True)
class ForecasterSpec:
    """What builds the network: variant, window lengths, and the model config sections."""

    variant: str
    history_length: int
    horizon_length: int
    backbone: dict[str, Any]
    sampler: dict[str, Any]
    attention: dict[str, Any]
    #: specs written before rearrangement existed served the raw forecasts: "none"
    monotone: str = "none"
    monotone_grid: int = 99
    #: calendar inputs (CalendarSpec.to_dict(), with the inputs training kept), None for a model without them
    calendar: dict[str, Any] | None = None
    #: "per_level": the weights carry conformal offsets fitted on validation windows
    conformal: str = "none"

    @classmethod
    def from_config(cls, cfg: Any) -> ForecasterSpec:
        """From a composed app config (``cfg.model``, ``cfg.data``), resolved."""
        from omegaconf import OmegaConf

        model = OmegaConf.to_container(cfg.model, resolve=True)
        assert isinstance(model, dict)
        return cls(
            variant=str(model.get("variant", "unknown")),
            history_length=int(cfg.data.history_length),
            horizon_length=int(cfg.data.horizon_length),
            backbone=dict(model["backbone"]),
            sampler=dict(model["sampler"]),
            attention=dict(model["attention"]),
            monotone=str(model.get("monotone", "none")),
            monotone_grid=int(model.get("monotone_grid", 99)),
            calendar=_calendar_dict(spec_from_config(cfg.data)),
            conformal=str(model.get("conformal", "none")),
        )

    def model_config(self) -> dict[str, Any]:
        """The ``model`` section this spec was made from (less the variant's name)."""
        return {"backbone": self.backbone, "sampler": self.sampler, "attention": self.attention,
                "monotone": self.monotone, "monotone_grid": self.monotone_grid, "conformal": self.conformal}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "variant": self.variant,
            "history_length": self.history_length,
            "horizon_length": self.horizon_length,
            "model": self.model_config(),
            "calendar": self.calendar,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForecasterSpec:
        if data.get("format") != SPEC_FORMAT:
            raise ModelFileError(f"not an anyq forecaster spec (format {data.get('format')!r}, expected {SPEC_FORMAT!r})")
        model = data["model"]
        return cls(
            variant=str(data["variant"]),
            history_length=int(data["history_length"]),
            horizon_length=int(data["horizon_length"]),
            backbone=dict(model["backbone"]),
            # specs written before model.sampler.signal existed drew on the raw bin loss
            sampler={"signal": "raw", **model["sampler"]},
            attention=dict(model["attention"]),
            monotone=str(model.get("monotone", "none")),
            monotone_grid=int(model.get("monotone_grid", 99)),
            calendar=data.get("calendar"),
            conformal=str(model.get("conformal", "none")),
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ForecasterSpec:
        return cls.from_dict(yaml.safe_load(Path(path).read_text()))

    def build(self) -> AnyQuantileForecaster:
        spec = self.calendar_spec()
        return forecaster_from_config(self.model_config(), self.history_length, self.horizon_length,
                                      **(spec.network_inputs() if spec is not None else {}))

    def calendar_spec(self) -> CalendarSpec | None:
        """The calendar inputs the model takes (the ones kept in training), None for none."""
        spec = CalendarSpec.from_dict(self.calendar) if self.calendar else None
        return spec if spec is not None and spec.num_features else None


def _calendar_dict(spec: CalendarSpec | None) -> dict[str, Any] | None:
    return spec.to_dict() if spec is not None else None


def checkpoint_weights(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The forecaster's ``state_dict`` out of a Lightning checkpoint (optimiser state left behind).

    Loaded with ``weights_only=True``: a checkpoint handed to a command is not trusted code.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        reason = first_sentence(exc)
        raise ModelFileError(f"{path} is not a readable anyq-train checkpoint ({reason})") from None
    weights = {k[len(CHECKPOINT_PREFIX):]: v for k, v in state.items() if k.startswith(CHECKPOINT_PREFIX)}
    if not weights:
        raise ModelFileError(f"{path}: no '{CHECKPOINT_PREFIX}*' weights; is it an anyq-train checkpoint?")
    return weights


def check_levels(levels: Any) -> np.ndarray:
    """Levels as float64, each strictly inside (0, 1); a RequestError names the first bad one."""
    try:
        q = np.asarray(levels, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"levels must be numbers strictly between 0 and 1 ({exc})") from None
    if q.size == 0:
        raise RequestError("no levels requested: ask for at least one level in (0, 1)")
    bad = ~((q > 0.0) & (q < 1.0))  # NaN fails both comparisons
    if bad.any():
        raise RequestError(f"levels must lie strictly between 0 and 1, got {q[bad].flat[0]:g}")
    return q


class ServedForecaster:
    """A forecaster in eval mode on CPU, answering ``forecast(history, levels)`` requests."""

    def __init__(self, spec: ForecasterSpec, weights: Mapping[str, torch.Tensor]) -> None:
        self.spec = spec
        self.model = spec.build()
        try:
            self.model.load_state_dict(dict(weights))
        except RuntimeError as exc:  # e.g. a checkpoint with another run's config
            detail = [line.strip() for line in str(exc).splitlines() if line.strip()][1:2] or [str(exc)]
            raise ModelFileError(f"weights do not fit the {spec.variant} model of this config: {detail[0]}") from None
        self.model.eval()

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, spec: ForecasterSpec) -> ServedForecaster:
        return cls(spec, checkpoint_weights(checkpoint))

    @classmethod
    def from_files(cls, weights: str | Path, spec: str | Path) -> ServedForecaster:
        return cls(ForecasterSpec.load(spec), torch.load(weights, map_location="cpu", weights_only=True))

    def save(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``weights.pt`` and ``forecaster.yaml`` into ``directory``; returns both paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = directory / WEIGHTS_FILE
        torch.save(self.model.state_dict(), weights)
        return weights, self.spec.save(directory / SPEC_FILE)

    def forecast(
        self, history: Any, levels: Any, names: Sequence[str] | None = None, origins: Any = None
    ) -> np.ndarray:
        """Quantile forecasts ``[N, H, Q]`` (float64, data units) for histories ``[N, >= L]``.

        ``levels`` is ``[Q]`` (the same levels for every window) or ``[N, Q]``. Only the last
        ``history_length`` hours of each history are used; ``names`` label windows in errors
        and, for a model with calendar inputs, pick each series' holidays. ``origins`` (the
        first forecast hour of each window, timestamps) is required by such a model and
        ignored otherwise; RequestError when it is missing or unreadable.
        """
        x = self._checked_history(history, names)
        calendar = self._calendar(x.shape[0], names, origins)
        q = check_levels(levels)
        if q.ndim == 1:
            q = np.broadcast_to(q, (x.shape[0], q.shape[0]))
        if q.ndim != 2 or q.shape[0] != x.shape[0]:
            raise RequestError(f"levels have shape {q.shape}; expected [Q] or [{x.shape[0]}, Q]")
        chunk = max(1, MAX_PAIRS_PER_CALL // q.shape[1])
        out = np.empty((x.shape[0], self.spec.horizon_length, q.shape[1]), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, x.shape[0], chunk):  # batches of windows, not single windows
                stop = start + chunk
                hist = torch.as_tensor(x[start:stop], dtype=torch.float32)
                level = torch.as_tensor(np.ascontiguousarray(q[start:stop]), dtype=torch.float32)
                cal = torch.from_numpy(calendar[start:stop]) if calendar is not None else None
                out[start:stop] = self.model(hist, level, cal).double().numpy()
        return out

    def _calendar(self, n: int, names: Sequence[str] | None, origins: Any) -> np.ndarray | None:
        spec = self.spec.calendar_spec()
        if spec is None:
            return None
        if origins is None:
            raise RequestError("this model takes calendar inputs: give each window's forecast origin "
                               "(the first forecast hour)")
        try:
            stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(origins).reshape(-1)))
        except (TypeError, ValueError) as exc:
            raise RequestError(f"forecast origins must be timestamps ({exc})") from None
        if len(stamps) != n or stamps.isna().any():
            raise RequestError(f"give one forecast origin per window: {len(stamps)} for {n} windows")
        ids = list(names) if names is not None else [""] * n
        return window_calendar(spec, ids, stamps, self.spec.history_length, self.spec.horizon_length)

    def _checked_history(self, history: Any, names: Sequence[str] | None) -> np.ndarray:
        try:
            x = np.asarray(history, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise RequestError(f"history must be numbers ({exc})") from None
        if x.ndim != 2 or x.shape[0] == 0:
            raise RequestError(f"history must be [windows, hours] with at least one window, got shape {x.shape}")
        need = self.spec.history_length
        if x.shape[1] < need:
            raise RequestError(f"history has {x.shape[1]} hours but the model needs {need}")
        x = x[:, -need:]
        bad = ~np.isfinite(x)
        if bad.any():
            row = int(np.argmax(bad.any(axis=1)))
            label = f"series {names[row]!r}" if names is not None else f"window {row}"
            raise RequestError(
                f"history of {label} has {int(bad[row].sum())} missing (NaN) or infinite value(s) "
                f"in its last {need} hours"
            )
        return x
