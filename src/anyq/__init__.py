"""anyq: sweep, ablate and compare any-quantile probabilistic load forecasters.

Layers, each importing only from those above it:

- ``anyq.data``       long-format series, windows, the synthetic panel and its oracle
- ``anyq.model``      NBEATS-AQ backbone, quantile samplers, adaptive attention
- ``anyq.metrics``    CRPS, coverage, calibration and point scores (docs/design.md §3)
- ``anyq.reference``  reference forecasters (oracle, seasonal naive) scored by the same code
- ``anyq.training``   Lightning module, Hydra configuration, the ``anyq-train`` app
- ``anyq.tracking``   MLflow store, run records, baseline lookup
- ``anyq.sweeping``   the Optuna engine behind Hydra multirun sweeps
- ``anyq.reporting``  study comparison, paired tests and the HTML dashboard
- ``anyq.serving``    the logged model, ``anyq-predict`` and ``mlflow models serve``
- ``anyq.app``        the commands; the only layer that turns errors into exit codes

``anyq.errors`` (how an error reads in one line), ``anyq.settings`` (declared ranges of the
settings) and ``anyq.lazy`` (names loaded on first use) sit below them all. See docs/design.md §6.
"""

__version__ = "0.1.0"
