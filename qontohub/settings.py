"""QontoHub settings: one module, driven by the environment.

Every value a deployment may change is read here from an environment variable, with a default
that is safe for development. ``QONTOHUB_ENV=production`` turns on the start-up checks in
``qontohub/checks.py``, which refuse to start with a development default left in place.
README.md lists every variable.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("QONTOHUB_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Environment --------------------------------------------------------------------------
ENVIRONMENT = os.environ.get("QONTOHUB_ENV", "development").strip().lower()
PRODUCTION = ENVIRONMENT == "production"

DEVELOPMENT_SECRET_KEY = "qontohub-development-only-secret-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
DEBUG = env_bool("DEBUG", not PRODUCTION)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "" if PRODUCTION else "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# Public base URL of this hub, used in OAuth redirect URIs and webhook subscriptions.
HUB_BASE_URL = os.environ.get("HUB_BASE_URL", "http://127.0.0.1:8000").rstrip("/")


# --- Secrets at rest ----------------------------------------------------------------------
def _field_encryption_keys() -> list[str]:
    """Comma-separated Fernet keys; the first encrypts, every one decrypts.

    Development generates one key into ``var/`` on first start so data written by ``make run``
    stays readable across restarts. Production must provide the keys (a check refuses a start
    without them), because a generated key would be lost with the machine.
    """
    keys = env_list("FIELD_ENCRYPTION_KEYS")
    if keys or PRODUCTION:
        return keys
    key_file = VAR_DIR / "field_encryption_keys"
    if not key_file.exists():
        key_file.write_text(Fernet.generate_key().decode() + "\n")
        key_file.chmod(0o600)
    return [k.strip() for k in key_file.read_text().split(",") if k.strip()]


FIELD_ENCRYPTION_KEYS = _field_encryption_keys()

# --- Applications -------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "allauth",
    "allauth.account",
    "django_q",
    "rest_framework",
    "drf_spectacular",
    "import_export",
    "qontohub",
    "connectors",
    "accountant",
    "reconciliation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "qontohub.urls"
WSGI_APPLICATION = "qontohub.wsgi.application"
ASGI_APPLICATION = "qontohub.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "qontohub.context_processors.organizations",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'qontohub.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the web process and the django-q2 cluster share the file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- People -------------------------------------------------------------------------------
AUTH_USER_MODEL = "qontohub.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/admin/"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_ADAPTER = "qontohub.people.AccountAdapter"
# Login attempts are rate-limited per IP and per account (allauth's rate limiter, on the cache).
ACCOUNT_RATE_LIMITS = {
    "login": "30/m/ip",
    "login_failed": "10/m/ip,5/5m/key",
    "reset_password": "20/m/ip,5/m/key",
}
ACCOUNT_LOGOUT_REDIRECT_URL = "/accounts/login/"
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "QontoHub <noreply@qontohub.local>")

SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION

# --- Cache and broker ---------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# django-q2. A task may run for at most ``timeout`` seconds; a task not acknowledged after
# ``retry`` seconds is handed out again, so retry must exceed timeout or a slow task would run
# twice at once. ``catch_up: False`` keeps a cluster that was down from replaying every
# missed run of every schedule when it comes back.
Q_CLUSTER = {
    "name": os.environ.get("Q_CLUSTER_NAME", "qontohub"),
    "workers": int(os.environ.get("Q_WORKERS", "2")),
    "timeout": int(os.environ.get("Q_TIMEOUT", "600")),
    "retry": int(os.environ.get("Q_RETRY", "720")),
    "max_attempts": 3,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    "queue_limit": 50,
    "label": "Jobs",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = 0.5
Q_SYNC = env_bool("Q_SYNC", False)
if Q_SYNC:
    Q_CLUSTER["sync"] = True
# A heartbeat older than this means the scheduler or the workers are not running.
HEARTBEAT_MAX_AGE_SECONDS = int(os.environ.get("HEARTBEAT_MAX_AGE_SECONDS", "180"))

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "qontohub.tokens.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "qontohub.pagination.DefaultCursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": [],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "QontoHub API",
    "DESCRIPTION": "Sync status, review queue and client files of a QontoHub installation.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Sandboxes ----------------------------------------------------------------------------
# The fake provider APIs are mounted under /sandbox/<slug>/ in development only.
SANDBOX_ENABLED = env_bool("SANDBOX_ENABLED", not PRODUCTION)

# --- Internationalisation -----------------------------------------------------------------
LANGUAGE_CODE = "en"
TIME_ZONE = os.environ.get("TIME_ZONE", "Europe/Paris")
USE_I18N = True
USE_TZ = True

# --- Static files -------------------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "staticfiles"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Development serves straight from the app folders; production runs collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))

# --- Logging ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "qontohub.logging.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # factur-x logs every PDF it builds at INFO; the QuickBooks flow renders thousands.
        "factur-x": {"level": "WARNING"},
    },
}

# Functions that add each app's demo data after ``seed_demo`` created the core workspace.
DEMO_SEEDERS: list[str] = ["connectors.demo.seed_connections", "accountant.demo.seed_accountant"]

# Sync runs, events, webhook events and finished pushes older than this are pruned daily.
HISTORY_RETENTION_DAYS = int(os.environ.get("HISTORY_RETENTION_DAYS", "90"))

# --- Providers ----------------------------------------------------------------------------
# Base URLs and the hub's own OAuth client per provider. Development points every provider at
# its sandbox mounted on this hub; production sets the real URLs and client credentials.
_SANDBOX = f"{HUB_BASE_URL}/sandbox"


def _provider(slug: str, **defaults: str) -> dict[str, str]:
    prefix = slug.upper()
    return {
        key: os.environ.get(f"{prefix}_{key.upper()}", value if SANDBOX_ENABLED else "")
        for key, value in defaults.items()
    }


PROVIDERS: dict[str, dict[str, str]] = {
    "qonto": _provider(
        "qonto",
        api_base_url=f"{_SANDBOX}/qonto",
        oauth_base_url=f"{_SANDBOX}/qonto",
        client_id="qontohub-dev",
        client_secret="qontohub-dev-secret",
        staging_token="",
    ),
    # QuickBooks Online: API host, Intuit's OAuth endpoints (three hosts in production; the
    # sandbox serves their paths under one root) and the webhook verifier token.
    "quickbooks": _provider(
        "quickbooks",
        api_base_url=f"{_SANDBOX}/quickbooks",
        authorize_url=f"{_SANDBOX}/quickbooks/connect/oauth2",
        token_url=f"{_SANDBOX}/quickbooks/oauth2/v1/tokens/bearer",
        revoke_url=f"{_SANDBOX}/quickbooks/v2/oauth2/tokens/revoke",
        client_id="qontohub-dev-qbo",
        client_secret="qontohub-dev-qbo-secret",
        webhook_verifier_token="qontohub-dev-qbo-verifier",
    ),
    # Pennylane: firm API token per connection; only the base URL is configured here.
    "pennylane": _provider(
        "pennylane",
        api_base_url=f"{_SANDBOX}/pennylane",
    ),
}
# Outbound HTTP: seconds per request (connect, read), retries of a transient failure.
HTTP_TIMEOUT = (float(os.environ.get("HTTP_CONNECT_TIMEOUT", "5")), float(os.environ.get("HTTP_READ_TIMEOUT", "30")))
HTTP_MAX_RETRIES = int(os.environ.get("HTTP_MAX_RETRIES", "4"))
HTTP_BACKOFF_BASE = float(os.environ.get("HTTP_BACKOFF_BASE", "0.5"))
HTTP_BACKOFF_CAP = float(os.environ.get("HTTP_BACKOFF_CAP", "30"))
# Seconds between interpreter thread switches while a sync runs (connectors.sync.quicker_thread_switches);
# 0 leaves the interpreter's own (5 ms).
SYNC_SWITCH_INTERVAL = float(os.environ.get("SYNC_SWITCH_INTERVAL", "0.0002"))

# --- After a sync -------------------------------------------------------------------------
# Tasks (dotted paths) that connectors enqueue after a sync that brought new or changed records,
# called as task(connection_id, changed); apps to the right hook in here, connectors import none.
AFTER_SYNC_TASKS: list[str] = [
    "reconciliation.tasks.after_sync",  # bank transactions ↔ documents
    "accountant.tasks.after_sync",  # entries of real-time client files
    "reconciliation.quickbooks_flow.after_sync",  # QuickBooks bills → Qonto supplier invoices
]
