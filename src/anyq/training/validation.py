"""The one validation pass of a job's config, before any data is read, run opened or torch
imported: the schema's ranges and data settings (:mod:`anyq.training.schema`), the model's own
checks (:mod:`anyq.model.checks`), the calendar, and the trainer's values and device
(Lightning is imported only to look for an accelerator other than the CPU). A bad setting is
thus refused in about a second.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from anyq.data.calendar import spec_from_config
from anyq.errors import ConfigError, closest
from anyq.model.checks import check_model_config
from anyq.training.schema import check_config


def validate_config(cfg: DictConfig, *, here: bool = True) -> None:
    """The one validation pass, before any data is read or run opened: every setting's range
    and the data settings (:func:`anyq.training.schema.check_config`), then the model's own
    checks (d_model divisible by n_heads, lengths divisible by the patch, ...: the same
    functions the networks' constructors run, without building them), the calendar, and the
    device. ``here=False`` (a job that will run on another machine) skips what only that
    machine can tell: whether the data file exists and the accelerator is there.

    Raises:
        ConfigError: one line naming the setting.
    """
    check_config(cfg, here=here)
    try:
        model = OmegaConf.to_container(cfg.model, resolve=True)
        assert isinstance(model, dict)
        check_model_config(model, cfg.data.history_length, cfg.data.horizon_length)
        spec_from_config(cfg.data)
    except ValueError as exc:
        raise ConfigError(str(exc), getattr(exc, "keys", ())) from None
    check_trainer_values(cfg.trainer)
    if here:
        check_device(cfg.trainer)


#: ``trainer.accelerator`` values and the names of Lightning's accelerators behind them (``gpu``:
#: CUDA or Apple's MPS, as Lightning reads it; ``auto`` picks whatever is there and is not checked).
ACCELERATORS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUAccelerator",), "gpu": ("CUDAAccelerator", "MPSAccelerator"), "cuda": ("CUDAAccelerator",),
    "mps": ("MPSAccelerator",), "tpu": ("XLAAccelerator",),
}


#: ``trainer.precision`` values Lightning 2 accepts (``Trainer(precision=…)``), aliases included.
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", "16", "bf16", "64",
              "transformer-engine", "transformer-engine-float16")


def check_devices(devices: Any) -> None:
    """``trainer.devices`` is what Lightning reads as devices: ``auto``, a count ``>= 1`` (or -1,
    all of them), or a non-empty list of device indices ``>= 0``. ConfigError."""
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        ok = len(devices) > 0 and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
    elif isinstance(devices, bool):
        ok = False
    elif isinstance(devices, int):
        ok = devices >= 1 or devices == -1
    else:
        ok = str(devices) == "auto"
    if not ok:
        raise ConfigError(f"trainer.devices={devices} must be auto, a count >= 1 (or -1: all), or a list of "
                          "device indices", ("trainer.devices",))


def check_trainer_values(t: DictConfig) -> None:
    """``trainer.devices`` and ``trainer.precision`` are values Lightning reads, on any machine. ConfigError."""
    check_devices(t.devices)
    if str(t.precision) not in PRECISIONS:
        near = closest(str(t.precision), PRECISIONS)
        hint = f"did you mean {near}? " if near else ""
        raise ConfigError(f"trainer.precision={t.precision!r} is not a precision Lightning knows ({hint}"
                          f"one of {', '.join(PRECISIONS[:6])})", ("trainer.precision",))


def check_device(t: DictConfig) -> None:
    """``trainer.accelerator`` is on this machine, with ``trainer.devices`` of it. ConfigError."""
    name = str(t.accelerator)
    if name == "auto":
        return
    if name not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator={name!r} is not one of auto, {', '.join(ACCELERATORS)}",
                          ("trainer.accelerator",))
    if name == "cpu":
        return  # always there; devices=N on the CPU is N processes, not N chips
    from pytorch_lightning import accelerators  # Lightning only for an accelerator to look for

    usable = [kind for kind in (getattr(accelerators, k) for k in ACCELERATORS[name]) if kind.is_available()]
    if not usable:
        raise ConfigError(f"trainer.accelerator={name}: this machine has no {name} that torch can use; "
                          "train on the CPU with trainer=cpu", ("trainer.accelerator",))
    count = usable[0].auto_device_count()
    devices = t.devices
    wanted = len(devices) if OmegaConf.is_list(devices) else devices if isinstance(devices, int) else None
    if wanted is not None and wanted != -1 and not 1 <= wanted <= count:
        raise ConfigError(f"trainer.devices={devices}: this machine has {count} {name} device(s)",
                          ("trainer.devices",))
