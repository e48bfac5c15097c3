"""Pennylane: the accounting software firms use; the hub pushes ledger entries there.

``sandbox.PennylaneSandbox`` is the in-memory fake of Pennylane's Firm API v1 and Company API v2
(see ``connectors/pennylane/README.md``).
"""
