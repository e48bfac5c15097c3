from django.apps import AppConfig


class AccountantConfig(AppConfig):
    name = "accountant"
    verbose_name = "Accountant hub"
