"""QuickBooks Online: the provider sandbox (and, later, the connector)."""
