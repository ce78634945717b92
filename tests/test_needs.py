"""The rule for what the tests need: under CI a missing emulator or tool fails the test."""

from __future__ import annotations

import pytest

from needs import missing, tool


def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-tool-skyscore is not installed"):
        tool("no-such-tool-skyscore")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        missing("the emulator")


def test_a_missing_tool_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        missing("the emulator")


def test_a_tool_is_found_on_path() -> None:
    assert tool("sh").endswith("sh")
