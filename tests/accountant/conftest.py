"""Fixtures every accountant test module uses: files written under a temporary media root, and
the Pennylane sandbox the firm's software connection talks to."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _media(media_root):  # type: ignore[no-untyped-def]
    return media_root


@pytest.fixture
def api(sandbox_for):  # type: ignore[no-untyped-def]
    return sandbox_for("pennylane")
