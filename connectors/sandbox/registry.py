"""Which fake answers for which provider: one line per provider, slug -> dotted class path.

``get_sandbox`` keeps one instance per slug for the whole process (the Django view, the
``requests`` adapter and the tests all see the same state), created and seeded on first use.
Nothing here imports Django.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from connectors.sandbox.base import FakeAPI

SANDBOXES: dict[str, str] = {
    "qonto": "connectors.qonto.sandbox.QontoSandbox",
    "pennylane": "connectors.pennylane.sandbox.PennylaneSandbox",
    "quickbooks": "connectors.quickbooks.sandbox.QuickBooksSandbox",
}

_instances: dict[str, FakeAPI] = {}
_lock = threading.Lock()


def sandbox_class(slug: str) -> type[FakeAPI]:
    """The fake's class for ``slug``; ``KeyError`` for an unknown provider."""
    module_path, _, class_name = SANDBOXES[slug].rpartition(".")
    cls = getattr(importlib.import_module(module_path), class_name)
    if not (isinstance(cls, type) and issubclass(cls, FakeAPI)):
        raise TypeError(f"{SANDBOXES[slug]} is not a FakeAPI")
    return cls


def create_sandbox(slug: str, seed: int | None = None, **options: Any) -> FakeAPI:
    """A new, private instance (the CLI server and tests that want isolation use this)."""
    return sandbox_class(slug)(seed, **options)


def get_sandbox(slug: str) -> FakeAPI:
    """The process-wide instance for ``slug``, created and seeded with defaults on first use."""
    with _lock:
        if slug not in _instances:
            _instances[slug] = create_sandbox(slug)
        return _instances[slug]


def forget_sandboxes() -> None:
    """Drop every process-wide instance; the next ``get_sandbox`` builds a fresh one."""
    with _lock:
        _instances.clear()
