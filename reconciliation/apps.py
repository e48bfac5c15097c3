from django.apps import AppConfig


class ReconciliationConfig(AppConfig):
    name = "reconciliation"
    verbose_name = "Reconciliation"

    def ready(self) -> None:
        # The QuickBooks bills admin (proxy model and its ModelAdmin) lives beside its flow.
        from reconciliation import quickbooks_admin  # noqa: F401
