"""The real-data benchmark's NBEATS peer: neuralforecast's NBEATS with MQLoss on the evaluation grid.

Runs in its own environment (``requirements/bench-real.txt``) and does not import anyq. It
reads the request of ``bench_peer_io.py`` (series, split ends, test windows, lengths, levels,
step budget, seed, torch threads), trains NBEATS on every series' gap-filled hours up to the
training end (no validation data: a fixed step budget) and forecasts each test window from
the same gap-filled ``history_length`` hours anyq sees, then writes the result ``.npz``
(``forecast`` float32 [N, H, Q] in request order, levels ascending; ``train_seconds`` /
``train_cpu_seconds`` of the ``fit`` call).

    python benchmarks/bench_real_peer.py request.json result.npz
"""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings

import numpy as np
import pandas as pd
import torch

from bench_peer_io import histories, load_request, load_series, save_result


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
    req = load_request(request_path)
    torch.set_num_threads(int(req["threads"]))
    levels = np.asarray(req["levels"], dtype=np.float64)
    history, horizon = int(req["history_length"]), int(req["horizon_length"])
    series = load_series(req["csv"])
    train_end = pd.Timestamp(req["train_end"])
    train = pd.concat([pd.DataFrame({"unique_id": uid, "ds": s.stamps, "y": s.filled})[s.stamps <= train_end]
                       for uid, s in series.items()], ignore_index=True)

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

    # One pseudo-series per window: its history_length hours, forecast in one call.
    inputs = histories(series, req)
    origins = pd.to_datetime(req["windows"]["origin"])
    pieces = [pd.DataFrame({"unique_id": f"o{k:06d}", "ds": pd.date_range(end=o - pd.Timedelta(hours=1),
                                                                          periods=history, freq="h"), "y": row})
              for k, (o, row) in enumerate(zip(origins, inputs))]
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
    save_result(result_path, values.reshape(len(pieces), horizon, len(levels)), train_seconds, train_cpu_seconds)
    print(f"peer: NBEATS trained {req['max_steps']} steps in {train_seconds:.1f} s, {len(pieces)} forecasts")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
