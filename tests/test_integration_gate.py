"""The ``integration`` tests skip, saying why, unless ``$ANYQ_INTEGRATION`` switches them on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import INTEGRATION_ENV

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value", [None, "0"])
def test_an_integration_test_is_skipped_with_its_reason_unless_switched_on(value: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != INTEGRATION_ENV}
    if value is not None:
        env[INTEGRATION_ENV] = value
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "tests/test_study_loop.py", "-k", "real_browser"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 skipped" in done.stdout and " passed" not in done.stdout
    assert f"integration: {INTEGRATION_ENV}=1 runs it" in done.stdout
