"""What the console shows of the libraries' chatter: nothing a user cannot act on.

Hydra configures logging for every job (``hydra.job_logging``) and for the sweeper's own
process (``hydra.hydra_logging``); ``conf/hydra/default.yaml`` puts :class:`ConsoleNoise` on
their console handlers only, so the job's log file (``<output dir>/<job>.log``) keeps every
line the console drops. The same file routes Lightning's loggers to those handlers (Lightning
otherwise prints through a stderr handler of its own that no file sees), and building the
filter turns on ``logging.captureWarnings``, so Python warnings reach the log file too.

Dropped from the console:

* a record logged with ``extra=FILE_ONLY`` (an error the command prints as its one
  ``error:`` line on stderr);

* Lightning's litlogger and litmodels tips and its ``Trainer(limit_*_batches=1.0)`` lines (the default
  whole split, said three times per run), ``GPU/TPU available: False`` on a CPU machine, its
  lines on loading the best checkpoint for testing (the run names that checkpoint) or a
  resumed one, and ``Trainer.fit stopped: max_steps=N reached`` (the progress line says it);
  Hydra's joblib launcher's ``Joblib.Parallel(...)`` settings line; Optuna's lines on creating
  or loading a study (the sweeper's own line names the study, its storage and its total);
* warnings about deprecations (``DeprecationWarning``, ``FutureWarning``, Lightning's own),
  Optuna's ``ExperimentalWarning`` and its heartbeat ``UserWarning`` (a heartbeat is what lets
  several workers share a study, :mod:`anyq.sweeping.engine`), and Lightning's warning that an
  epoch has fewer batches than ``log_every_n_steps`` (small data; the metrics are logged per
  validation check and epoch anyway); on a resume, that the checkpoint folder changed (each
  job has its own) and that a mid-epoch checkpoint restarts its epoch's batches (README.md,
  "Resuming"); on scoring a checkpoint (``task=test``), that the callbacks which wrote it are
  not given (scoring needs only its weights).
"""

from __future__ import annotations

import logging
import re

NOISE = re.compile(
    r"Tip: .*(litlogger|litmodels)"
    r"|^`Trainer\(limit_(train|val|test|predict)_batches=1\.0\)` was configured"
    r"|^(GPU|TPU) available: False"
    r"|^(Restoring states from|Loaded model weights from|Restored all states from) the checkpoint"
    r"|^`Trainer\.fit` stopped: `max_(steps|epochs)=\d+` reached"
    r"|^Joblib\.Parallel\("
    r"|^A new study created in \w+ with name: |^Using an existing study with `study_name="
)
NOISY_WARNINGS = re.compile(
    r"deprecat|FutureWarning|ExperimentalWarning|Heartbeat of storage is supposed to be used"
    r"|is smaller than the logging interval|The dirpath has changed from"
    r"|resuming from a checkpoint that ended before the epoch ended"
    r"|when using `ckpt_path`, callbacks used to create the checkpoint need to be provided", re.IGNORECASE)


#: ``extra=`` of a record meant for the log file only: an error the command prints as its own
#: ``error:`` line on stderr, which the console would otherwise show twice.
FILE_ONLY = {"console": False}


class ConsoleNoise(logging.Filter):
    """Keeps a record off the console when it is library noise (see the module doc)."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        logging.captureWarnings(True)  # warnings become records of "py.warnings": the log file keeps them

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False:
            return False
        message = record.getMessage()
        if record.name == "py.warnings":
            return not NOISY_WARNINGS.search(message)
        return not NOISE.search(message)
