"""What anyq takes from other libraries' private names, pinned: one test per adapter function.

An upgrade of Hydra or OmegaConf that moves one of them fails here, by name,
instead of somewhere in a sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import IntegerNode, OmegaConf

from anyq.sweeping import hydra_private


# ------------------------------------------------------------------------------- Hydra
def test_job_error_is_the_stored_exception_without_a_stderr_line(capfd):
    error = ValueError("loss is nan")
    result = JobReturn(overrides=["seed=1"], status=JobStatus.FAILED)
    result.return_value = error  # the public setter
    assert hydra_private.job_error(result) is error
    assert capfd.readouterr().err == ""
    with pytest.raises(ValueError, match="loss is nan"):  # what the public getter does instead
        result.return_value  # noqa: B018
    done = JobReturn(status=JobStatus.COMPLETED)
    done.return_value = {"val/crps": 1.0}
    assert hydra_private.job_error(done) == {"val/crps": 1.0}


@dataclass
class _Schema:
    epochs: int = 3
    steps: Optional[int] = None


def test_config_node_is_the_typed_node_even_for_a_none_value():
    cfg = OmegaConf.structured(_Schema)
    assert isinstance(hydra_private.config_node(cfg, "epochs"), IntegerNode)
    node = hydra_private.config_node(cfg, "steps")
    assert isinstance(node, IntegerNode) and cfg.steps is None


def test_command_line_reads_flags_and_overrides_as_hydra_main_does(capsys):
    args = hydra_private.command_line(["-m", "--cfg", "job", "seed=0,1", "model=nbeats_aq", "-cd", "/x"])
    assert args.multirun and args.cfg == "job" and args.config_dir == "/x"
    assert args.overrides == ["seed=0,1", "model=nbeats_aq"]
    assert not (args.help or args.hydra_help or args.shell_completion or args.config_path or args.config_name)
    assert hydra_private.command_line(["--no-such-flag", "seed=1"]) is None  # left to Hydra to refuse
    assert hydra_private.command_line(["-cd"]) is None
    assert capsys.readouterr().err == ""  # nothing printed: Hydra prints its own usage error
