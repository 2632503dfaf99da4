"""A trained forecaster ready to answer requests: its weights plus the config that builds it.

A bundle is two files, the way a served model carries them: ``weights.pt`` (the
forecaster's ``state_dict``, sampler state included, because the attention's importance
modulation reads it at inference; no optimiser state) and ``forecaster.yaml`` (the resolved
model config and window lengths). Both load without the training stack or the data.

A model with ``model.conformal=online`` calibrates each request from its own history: every
earlier origin inside the history (``origin_step`` hours apart, counted back from the
forecast origin) whose target hours are in the history too is forecast and scored, and the
online calibration (:mod:`anyq.model.online`) replays them in time order from the fitted
split-conformal offsets; the forecast uses the offsets they lead to. A history of exactly
``history_length`` hours has no earlier origin, so it is forecast with the split-conformal
offsets alone.

A model trained with ``data.calendar.holiday_history=week_before`` reads each request's history
as training did: every hour on a holiday of the series' calendar replaced by the same hour a week
earlier in the request (:func:`anyq.data.holiday_history.request_history`; the calendar travels
in the spec). Give the hours the rule reaches back to (for a holiday in the first week of the
window, ``history_length + 168`` hours) and the forecast is the one training's windows got;
replayed origins are scored against the real values.
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
from anyq.data.holiday_history import request_history
from anyq.data.reader import parse_dates
from anyq.errors import DataError, ModelFileError, RequestError, first_line, first_sentence
from anyq.model.config import ONLINE_GAMMA_DEFAULT, SCALER_DEFAULT
from anyq.model.forecaster import AnyQuantileForecaster, forecaster_from_config
from anyq.model.online import online_offsets

SPEC_FORMAT = "anyq-forecaster/1"
WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "forecaster.yaml"
#: Prefix of the forecaster's parameters in a Lightning checkpoint of ForecastingModule.
CHECKPOINT_PREFIX = "forecaster."
#: (window, level) pairs per forward call: bounds memory for large requests.
MAX_PAIRS_PER_CALL = 65536


def yaml_problem(exc: BaseException) -> str:
    """What a YAML parser objected to, in one line: ``<problem> (line L, column C)``."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{exc.problem}{where}"
    return first_line(exc, with_type=True)


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
    #: "per_level": the weights carry conformal offsets fitted on validation windows;
    #: "online": those offsets are the seed of the online calibration from the request history
    conformal: str = "none"
    online_gamma: float = ONLINE_GAMMA_DEFAULT
    #: how each window is normalised (model.scaler); specs written before it existed: "max_abs"
    scaler: str = SCALER_DEFAULT
    #: hours between the origins the online calibration replays (the run's data.eval_step)
    origin_step: int = 24

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
            online_gamma=float(model.get("online_gamma", ONLINE_GAMMA_DEFAULT)),
            scaler=str(model.get("scaler", SCALER_DEFAULT)),
            origin_step=int(cfg.data.eval_step),
        )

    @classmethod
    def from_config_file(cls, path: str | Path) -> ForecasterSpec:
        """From the config file of a run (Hydra's ``.hydra/config.yaml``, a run's ``config.yaml``).

        Raises:
            FileNotFoundError: no file at ``path``.
            ModelFileError: a file that is not YAML, or whose settings build no model (one line
                naming the file and, for YAML, the line).
        """
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        try:
            cfg = OmegaConf.load(path)
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ModelFileError(f"run config {path} is not readable YAML: {yaml_problem(exc)}") from None
        try:
            return cls.from_config(cfg)
        except (OmegaConfBaseException, KeyError, AttributeError, TypeError, ValueError) as exc:
            raise ModelFileError(f"run config {path} does not describe an anyq model: "
                                 f"{first_line(exc, with_type=isinstance(exc, KeyError))}") from None

    def model_config(self) -> dict[str, Any]:
        """The ``model`` section this spec was made from (less the variant's name)."""
        return {"backbone": self.backbone, "sampler": self.sampler, "attention": self.attention,
                "monotone": self.monotone, "monotone_grid": self.monotone_grid, "conformal": self.conformal,
                "online_gamma": self.online_gamma, "scaler": self.scaler}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "variant": self.variant,
            "history_length": self.history_length,
            "horizon_length": self.horizon_length,
            "model": self.model_config(),
            "calendar": self.calendar,
            "origin_step": self.origin_step,
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
            online_gamma=float(model.get("online_gamma", ONLINE_GAMMA_DEFAULT)),
            scaler=str(model.get("scaler", SCALER_DEFAULT)),
            origin_step=int(data.get("origin_step", 24)),
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ForecasterSpec:
        """Read a spec file (:meth:`save`); ModelFileError (one line) for one that is not YAML
        or not a spec."""
        try:
            data = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ModelFileError(f"forecaster spec {path} is not readable YAML: {yaml_problem(exc)}") from None
        if not isinstance(data, Mapping):
            raise ModelFileError(f"forecaster spec {path} is not a mapping of settings")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ModelFileError):
                raise
            raise ModelFileError(f"forecaster spec {path} is incomplete: {first_line(exc, with_type=True)}") from None

    def build(self) -> AnyQuantileForecaster:
        spec = self.calendar_spec()
        return forecaster_from_config(self.model_config(), self.history_length, self.horizon_length,
                                      **(spec.network_inputs() if spec is not None else {}))

    def calendar_spec(self) -> CalendarSpec | None:
        """The calendar inputs the model takes (the ones kept in training), None for none."""
        spec = CalendarSpec.from_dict(self.calendar) if self.calendar else None
        return spec if spec is not None and spec.num_features else None

    def holiday_history_spec(self) -> CalendarSpec | None:
        """The calendar whose holiday hours the history input replaces, None when it is kept as is."""
        spec = CalendarSpec.from_dict(self.calendar) if self.calendar else None
        return spec if spec is not None and spec.cleans_history else None


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

        ``levels`` is ``[Q]`` (the same levels for every window) or ``[N, Q]``. The last
        ``history_length`` hours of each history are the model's input; a model with
        ``conformal=online`` also calibrates from the earlier hours (NaN where a row has none:
        windows touching them are not replayed; see the module docstring). ``names`` label
        windows in errors and, for a model with calendar inputs, pick each series' holidays. ``origins`` (the
        first forecast hour of each window, timestamps) is required by such a model and by one
        that replaces holiday hours of its history (see the module docstring), and ignored
        otherwise; RequestError when it is missing or unreadable.
        """
        full = self._checked_history(history, names)
        inputs = self.history_input(full, names, origins)
        x = inputs[:, -self.spec.history_length:]
        calendar = self._calendar(x.shape[0], names, origins)
        offsets = self.replayed_offsets(full, names, origins, inputs) if self.calibrates_online else None
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
                level = torch.tensor(q[start:stop], dtype=torch.float32)  # a copy: q may be a read-only broadcast
                cal = torch.from_numpy(calendar[start:stop]) if calendar is not None else None
                grid_offsets = offsets[start:stop] if offsets is not None else None
                out[start:stop] = self.model(hist, level, cal, grid_offsets=grid_offsets).double().numpy()
        return out

    @property
    def calibrates_online(self) -> bool:
        """Whether forecasts are calibrated from the earlier hours of each history."""
        return self.model.conformal_mode == "online"

    @property
    def reads_earlier_hours(self) -> bool:
        """Whether hours before the last ``history_length`` of a history change the forecast
        (online calibration replays them; holiday hours are replaced from them)."""
        return self.calibrates_online or self.spec.holiday_history_spec() is not None

    def history_input(self, history: np.ndarray, names: Sequence[str] | None, origins: Any) -> np.ndarray:
        """What the model reads of ``history [N, T]``: the same array, or, for a model trained with
        ``data.calendar.holiday_history`` other than ``keep``, holiday hours replaced by the hours
        a week before them (:func:`anyq.data.holiday_history.request_history`); ``[N, T]``."""
        spec = self.spec.holiday_history_spec()
        if spec is None:
            return history
        stamps = self._origin_stamps(history.shape[0], origins, "this model replaces the holiday hours of its history")
        ids = list(names) if names is not None else [""] * history.shape[0]
        return request_history(spec, ids, stamps, history)

    def replayed_offsets(self, history: np.ndarray, names: Sequence[str] | None, origins: Any,
                         inputs: np.ndarray | None = None) -> torch.Tensor:
        """Per-window offsets ``[N, K]`` on the rearrangement grid from replaying the earlier
        origins of each history ``[N, T]`` (T >= history_length; NaN marks hours a row lacks).
        ``inputs`` (``[N, T]``, default ``history``) is what the replayed windows read as their
        history (:meth:`history_input`); their targets are ``history``'s real values.

        Replayed origins are ``T - m * origin_step`` hours into the history (m >= 1) with
        ``history_length`` hours before and ``horizon_length`` hours from them inside it; each
        row is its own series, and the forecast origin ``T`` sees every replayed window (all
        end by ``T``)."""
        n, t = history.shape
        big_l, h, step = self.spec.history_length, self.spec.horizon_length, self.spec.origin_step
        back = np.arange(1, t // step + 1) * step  # hours before the forecast origin
        back = back[(t - back >= big_l) & (back >= h)]
        m = back.size
        rows = np.repeat(np.arange(n), m)
        starts = np.tile(t - back, n)  # replayed origins as positions in the history
        past = (history if inputs is None else inputs)[rows[:, None], starts[:, None] - big_l + np.arange(big_l)]
        target = history[rows[:, None], starts[:, None] + np.arange(h)]
        usable = np.isfinite(past).all(axis=1)
        target = np.where(usable[:, None], target, np.nan)  # a window with gaps updates nothing
        past = np.where(usable[:, None], past, 1.0)
        k = self.model.monotone_levels.numel()
        residual = torch.full((n * m, h, k), float("nan"), dtype=torch.float64)
        if m:
            calendar = None
            if self.spec.calendar_spec() is not None:
                stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(origins).reshape(-1)))
                replayed = stamps[rows] - pd.to_timedelta(np.tile(back, n), unit="h")
                ids = list(np.asarray(names)[rows]) if names is not None else None
                calendar = self._calendar(n * m, ids, replayed)
            chunk = max(1, MAX_PAIRS_PER_CALL // k)
            grid = self.model.monotone_levels
            with torch.inference_mode():
                for begin in range(0, n * m, chunk):
                    end = begin + chunk
                    hist = torch.as_tensor(past[begin:end], dtype=torch.float32)
                    x, loc, scale = self.model.normalise(hist)
                    cal = torch.from_numpy(calendar[begin:end]) if calendar is not None else None
                    raw = self.model.forward_normalised(x, grid.expand(hist.shape[0], -1), cal)
                    y = (torch.as_tensor(target[begin:end]) - loc.double()) / scale.double()
                    residual[begin:end] = y.unsqueeze(-1) - raw.double()
        # the forecast windows themselves: no target, issued at T after every replayed origin
        residual = torch.cat([residual, torch.full((n, h, k), float("nan"), dtype=torch.float64)])
        series = torch.as_tensor(np.concatenate([rows, np.arange(n)]))
        origin = torch.as_tensor(np.concatenate([starts, np.full(n, t)]), dtype=torch.long)
        conformal = self.model.conformal
        assert conformal is not None
        offsets = online_offsets(residual, series, origin, h, self.model.monotone_levels, conformal.offsets,
                                 self.model.online_step)
        return offsets[n * m:].float()

    def _calendar(self, n: int, names: Sequence[str] | None, origins: Any) -> np.ndarray | None:
        spec = self.spec.calendar_spec()
        if spec is None:
            return None
        stamps = self._origin_stamps(n, origins, "this model takes calendar inputs")
        ids = list(names) if names is not None else [""] * n
        return window_calendar(spec, ids, stamps, self.spec.history_length, self.spec.horizon_length)

    @staticmethod
    def _origin_stamps(n: int, origins: Any, needs: str) -> pd.DatetimeIndex:
        """``origins`` as ``n`` stamps; RequestError (``needs``: why the model asks for them)."""
        if origins is None:
            raise RequestError(f"{needs}: give each window's forecast origin (the first forecast hour)")
        try:  # the data's rule: stamps with a UTC offset are converted to UTC, naive
            stamps = pd.DatetimeIndex(parse_dates(pd.Series(np.asarray(origins).reshape(-1)), "request",
                                                  column="origin"))
        except (DataError, TypeError, ValueError) as exc:
            raise RequestError(f"forecast origins must be timestamps ({first_line(exc)})") from None
        if len(stamps) != n or stamps.isna().any():
            raise RequestError(f"give one forecast origin per window: {len(stamps)} for {n} windows")
        return stamps

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
        bad = ~np.isfinite(x[:, -need:])
        if bad.any():
            row = int(np.argmax(bad.any(axis=1)))
            label = f"series {names[row]!r}" if names is not None else f"window {row}"
            raise RequestError(
                f"history of {label} has {int(bad[row].sum())} missing (NaN) or infinite value(s) "
                f"in its last {need} hours"
            )
        return x
