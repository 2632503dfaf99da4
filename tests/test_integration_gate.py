"""The ``integration`` tests skip, saying why, unless ``$ANYQ_INTEGRATION`` switches them on."""

from __future__ import annotations

import pytest

from conftest import INTEGRATION_ENV, INTEGRATION_SKIP, integration_enabled, pytest_collection_modifyitems


class Item:
    """What the collection hook reads and writes of a collected test."""

    def __init__(self, *markers: str) -> None:
        self.markers = [pytest.Mark(name, (), {}) for name in markers]

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return next((m for m in self.markers if m.name == name), None)

    def add_marker(self, marker: pytest.MarkDecorator) -> None:
        self.markers.append(marker.mark)


@pytest.mark.parametrize(("value", "on"), [(None, False), ("", False), ("0", False), ("1", True), ("yes", True)])
def test_the_variable_switches_the_integration_tests_on_unless_empty_or_0(value: str | None, on: bool) -> None:
    environ = {} if value is None else {INTEGRATION_ENV: value}
    assert integration_enabled(environ) is on


@pytest.mark.parametrize(("value", "skipped"), [(None, True), ("0", True), ("1", False)])
def test_an_integration_test_is_skipped_with_its_reason_unless_switched_on(
    value: str | None, skipped: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv(INTEGRATION_ENV, raising=False)
    else:
        monkeypatch.setenv(INTEGRATION_ENV, value)
    integration, slow, plain = Item("integration", "slow"), Item("slow"), Item()
    pytest_collection_modifyitems(None, [integration, slow, plain])  # type: ignore[arg-type]
    skip = integration.get_closest_marker("skip")
    assert (skip is not None) is skipped
    if skipped:
        assert skip.kwargs["reason"] == INTEGRATION_SKIP
        assert INTEGRATION_SKIP.startswith(f"integration: {INTEGRATION_ENV}=1 runs it")
    assert slow.get_closest_marker("skip") is None and plain.get_closest_marker("skip") is None
