"""Fake provider APIs for a hub without internet: see ``base.FakeAPI``.

``get_sandbox(slug)`` returns the process-wide fake of a provider; ``SandboxAdapter`` routes a
``requests.Session`` to a fake in-process; ``server.serve()`` puts one on a real port.
"""

from connectors.sandbox.adapter import SandboxAdapter, mount_sandbox
from connectors.sandbox.base import (
    FakeAPI,
    SandboxRequest,
    SandboxResponse,
    json_response,
    route,
)
from connectors.sandbox.registry import get_sandbox

__all__ = [
    "FakeAPI",
    "SandboxAdapter",
    "SandboxRequest",
    "SandboxResponse",
    "get_sandbox",
    "json_response",
    "mount_sandbox",
    "route",
]
