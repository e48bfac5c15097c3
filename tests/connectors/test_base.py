"""``connectors.base``: what the contract tells callers about a provider."""

from __future__ import annotations

from connectors.registry import connector_class


def test_only_providers_that_serve_attachment_files_say_so():
    # The accountant hub asks before fetching a supporting document (a Pennylane file has none).
    assert connector_class("qonto").serves_attachments()
    assert connector_class("quickbooks").serves_attachments()
    assert not connector_class("pennylane").serves_attachments()
