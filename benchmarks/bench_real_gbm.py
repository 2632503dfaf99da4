"""The real-data benchmark's gradient-boosted peer: LightGBM quantile regression as built for load.

Runs in the peers' environment (``requirements/bench-real.txt``), reads the request of
``bench_peer_io.py`` and writes its result ``.npz``. The model is the direct, global set-up
common in load forecasting practice: one LightGBM model per quantile level (objective
``quantile``, ``alpha`` = the level) for a subset of :data:`FIT_LEVELS` (23 levels), each
model shared by all series and all 48 horizon steps; the 23 predictions of a row are sorted
(rearrangement, Chernozhukov et al. 2010) and linearly interpolated to the request's grid,
which keeps them monotone in the level.

Features of a row (window origin ``o``, target hour ``t = o + h``, all values divided by the
series' mean over its training hours):

- ``step`` (h + 1), ``hour`` and ``weekday`` of ``t``, ``series`` (categorical);
- ``last``: the value at ``o - 1``;
- ``same_hour``: the value at the target's clock hour on the last day before ``o``
  (``t - 24 * ceil((h + 1) / 24)``);
- ``week_before``: the value at ``t - 168`` (in the history for h < 168);
- ``mean_24`` / ``std_24`` and ``mean_168`` / ``std_168`` over the last 24 / 168 hours before ``o``.

Inputs are the gap-filled values (the hours anyq's history sees); a row whose target hour is
missing is left out of training. Training rows: origins every ``TRAIN_STEP`` hours whose 48
targets lie in the training range; early stopping on the validation windows (one origin a
day at 00:00, targets in the validation range) with the level's pinball loss.

    python benchmarks/bench_real_gbm.py request.json result.npz
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from bench_peer_io import Series, load_request, load_series, save_result

FIT_LEVELS = np.array([0.01, 0.02, 0.05, *np.round(np.arange(0.10, 0.91, 0.05), 2), 0.95, 0.98, 0.99])
TRAIN_STEP = 4
FEATURES = ("step", "hour", "weekday", "series", "last", "same_hour", "week_before",
            "mean_24", "std_24", "mean_168", "std_168")
PARAMS = {"objective": "quantile", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 50,
          "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1, "verbose": -1}
MAX_ROUNDS, PATIENCE = 1000, 50


def features(s: Series, code: int, scale: float, origins: np.ndarray, horizon: int) -> np.ndarray:
    """Rows for ``origins`` (grid positions, each >= 168) x steps, float64 [len(origins) * horizon, F]."""
    v = s.filled / scale
    steps = np.arange(horizon)
    t = origins[:, None] + steps[None, :]  # target positions [N, H]
    back = 24 * np.ceil((steps + 1) / 24).astype(np.int64)
    last24 = sliding_window_view(v, 24)[origins - 24]  # [N, 24]
    last168 = sliding_window_view(v, 168)[origins - 168]
    stamps = s.stamps[t.ravel()]
    n = len(origins)
    cols = [
        np.tile(steps + 1, n), stamps.hour, stamps.day_of_week, np.full(n * horizon, code),
        np.repeat(v[origins - 1], horizon), v[t - back[None, :]].ravel(), v[t - 168].ravel(),
        np.repeat(last24.mean(1), horizon), np.repeat(last24.std(1), horizon),
        np.repeat(last168.mean(1), horizon), np.repeat(last168.std(1), horizon),
    ]
    return np.column_stack(cols).astype(np.float64)


def rows(series: dict[str, Series], scales: dict[str, float], start: pd.Timestamp | None, end: pd.Timestamp,
         step: int, horizon: int, midnight: bool) -> tuple[np.ndarray, np.ndarray]:
    """Features and scaled targets of every window whose targets lie in (``start``, ``end``]."""
    xs, ys = [], []
    for code, (uid, s) in enumerate(series.items()):
        last = int(np.searchsorted(s.stamps, end, side="right")) - horizon  # last origin position
        first = 168 if start is None else max(168, int(np.searchsorted(s.stamps, start, side="right")))
        origins = np.arange(first, last + 1)
        if midnight:
            origins = origins[s.stamps[origins].hour == 0]
        origins = origins[::step]
        if len(origins) == 0:
            continue
        xs.append(features(s, code, scales[uid], origins, horizon))
        ys.append((s.y[origins[:, None] + np.arange(horizon)[None, :]] / scales[uid]).ravel())
    x, y = np.concatenate(xs), np.concatenate(ys)
    keep = np.isfinite(y)
    return x[keep], y[keep]


def interpolate(fitted: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Sorted predictions at :data:`FIT_LEVELS` [..., 23] linearly interpolated to ``levels``
    [..., Q] (flat beyond the fitted range); monotone in the level."""
    fitted = np.sort(fitted, axis=-1)
    flat = fitted.reshape(-1, fitted.shape[-1])
    out = np.stack([np.interp(levels, FIT_LEVELS, row) for row in flat])
    return out.reshape(*fitted.shape[:-1], len(levels))


def main(request_path: str, result_path: str) -> int:
    import lightgbm as lgb

    req = load_request(request_path)
    levels = np.asarray(req["levels"], dtype=np.float64)
    horizon, threads, seed = int(req["horizon_length"]), int(req["threads"]), int(req["seed"])
    if int(req["history_length"]) < 168:
        raise ValueError("the LightGBM peer needs a history of at least 168 hours")
    series = load_series(req["csv"])
    train_end, val_end = pd.Timestamp(req["train_end"]), pd.Timestamp(req["val_end"])
    scales = {}
    for uid, s in series.items():
        scale = float(np.nanmean(np.abs(s.y[s.stamps <= train_end])))
        scales[uid] = scale if np.isfinite(scale) and scale > 0 else 1.0

    started, cpu_started = time.perf_counter(), time.process_time()
    x_train, y_train = rows(series, scales, None, train_end, TRAIN_STEP, horizon, midnight=False)
    x_val, y_val = rows(series, scales, train_end, val_end, 1, horizon, midnight=True)
    params = {**PARAMS, "num_threads": threads, "seed": seed}
    train = lgb.Dataset(x_train, y_train, feature_name=list(FEATURES), categorical_feature=["series"],
                        free_raw_data=False)
    val = lgb.Dataset(x_val, y_val, reference=train)
    models, rounds = [], []
    for alpha in FIT_LEVELS:
        booster = lgb.train({**params, "alpha": float(alpha)}, train, num_boost_round=MAX_ROUNDS,
                            valid_sets=[val], callbacks=[lgb.early_stopping(PATIENCE, verbose=False)])
        models.append(booster)
        rounds.append(booster.best_iteration)
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - cpu_started

    codes = {uid: k for k, uid in enumerate(series)}
    uids, origins = req["windows"]["unique_id"], pd.to_datetime(req["windows"]["origin"])
    x_test = np.concatenate([features(series[u], codes[u], scales[u], np.array([series[u].position(o)]), horizon)
                             for u, o in zip(uids, origins)])
    fitted = np.stack([m.predict(x_test, num_iteration=m.best_iteration) for m in models], axis=-1)
    scale = np.repeat([scales[u] for u in uids], horizon)[:, None]
    forecast = interpolate(fitted * scale, levels).reshape(len(uids), horizon, len(levels))
    save_result(result_path, forecast, train_seconds, train_cpu_seconds)
    print(f"peer: LightGBM {len(models)} levels, {len(x_train)} training rows, rounds "
          f"{min(rounds)}-{max(rounds)}, trained in {train_seconds:.1f} s ({train_cpu_seconds:.1f} CPU s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
