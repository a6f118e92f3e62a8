"""services.logs: records go to the stderr of the moment they are emitted."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from services import logs


def test_a_record_after_stderr_was_swapped_and_closed_goes_to_the_new_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As when a command ran in a test's CliRunner (which swaps stderr, then closes it) and a
    later record would otherwise be written to the closed stream ("--- Logging error ---")."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        monkeypatch.setattr(sys, "stderr", first)
        logs.configure("INFO", "text")
        first.close()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("urbanpulse.test").warning("after the swap")
        assert "after the swap" in second.getvalue()
        assert "Logging error" not in second.getvalue()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
