"""The real-data benchmark's peer: neuralforecast's NBEATS with MQLoss on the evaluation grid.

Runs in its own environment (``requirements/bench-real.txt``) and does not import anyq. It
reads a JSON request written by ``bench_real.py``: the long CSV, the last training hour,
the test origins (first target hour of each window), the history and horizon lengths, the
quantile levels, the step budget, the seed and the torch thread count. It trains NBEATS on
the hours up to the training end (no validation data: a fixed step budget) and forecasts
each origin from the ``history_length`` hours before it, then writes an ``.npz`` with
``forecast`` float32 [N, H, Q] (origins in request order, levels ascending) and
``train_seconds`` / ``train_cpu_seconds`` (wall and process CPU time of the ``fit`` call).

    python benchmarks/bench_real_peer.py request.json result.npz
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import warnings

import numpy as np
import pandas as pd
import torch


def level_of(column: str, model: str) -> float:
    """Quantile level of an MQLoss output column: ``NBEATS-lo-98.0`` -> 0.01, ``-median`` -> 0.5."""
    tail = column[len(model) + 1:]
    if tail == "median":
        return 0.5
    match = re.fullmatch(r"(lo|hi)-([0-9.]+)", tail)
    if not match:
        raise ValueError(f"unexpected output column {column!r}")
    width = float(match.group(2)) / 100.0
    return (1.0 - width) / 2.0 if match.group(1) == "lo" else (1.0 + width) / 2.0


def main(request_path: str, result_path: str) -> int:
    from neuralforecast import NeuralForecast
    from neuralforecast.losses.pytorch import MQLoss
    from neuralforecast.models import NBEATS

    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    req = json.loads(open(request_path).read())
    torch.set_num_threads(int(req["threads"]))
    levels = np.asarray(req["levels"], dtype=np.float64)
    history, horizon = int(req["history_length"]), int(req["horizon_length"])
    frame = pd.read_csv(req["csv"], parse_dates=["ds"])
    train = frame[frame["ds"] <= pd.Timestamp(req["train_end"])]

    model = NBEATS(
        h=horizon, input_size=history, loss=MQLoss(quantiles=levels.tolist()),
        max_steps=int(req["max_steps"]), scaler_type="robust", random_seed=int(req["seed"]),
        accelerator="cpu", devices=1, enable_progress_bar=False, logger=False,
        enable_checkpointing=False, enable_model_summary=False,
    )
    nf = NeuralForecast(models=[model], freq="h")
    started, cpu_started = time.perf_counter(), time.process_time()
    nf.fit(df=train, val_size=0)
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - cpu_started

    # One pseudo-series per origin: the history_length hours before it, forecast in one call.
    series = frame.set_index("ds")["y"]
    pieces = []
    for k, stamp in enumerate(pd.to_datetime(req["origins"])):
        window = series.loc[stamp - pd.Timedelta(hours=history): stamp - pd.Timedelta(hours=1)]
        if len(window) != history:
            raise ValueError(f"origin {stamp}: {len(window)} history hours, expected {history}")
        pieces.append(pd.DataFrame({"unique_id": f"o{k:05d}", "ds": window.index, "y": window.to_numpy()}))
    predicted = nf.predict(df=pd.concat(pieces, ignore_index=True))
    predicted = predicted.reset_index() if "unique_id" not in predicted.columns else predicted
    name = type(model).__name__
    columns = [c for c in predicted.columns if c.startswith(name + "-")]
    got = np.array([level_of(c, name) for c in columns])
    order = np.argsort(got)
    if len(got) != len(levels) or np.abs(got[order] - levels).max() > 1e-6:
        raise ValueError(f"peer output levels {got[order][:3]}... do not match the requested grid")
    predicted = predicted.sort_values(["unique_id", "ds"])
    values = predicted[[columns[i] for i in order]].to_numpy(np.float32)
    forecast = values.reshape(len(pieces), horizon, len(levels))
    np.savez(result_path, forecast=forecast, train_seconds=np.float64(train_seconds),
             train_cpu_seconds=np.float64(train_cpu_seconds))
    print(f"peer: trained {req['max_steps']} steps in {train_seconds:.1f} s, {len(pieces)} forecasts")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
