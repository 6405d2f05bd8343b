"""Settings for Election Monitor, read from the environment.

With nothing set you get the embedded default: SQLite, local-memory cache and eager
Celery, so the demo needs no server. ``DATABASE_URL``, ``REDIS_URL`` and
``CELERY_BROKER_URL`` switch to PostgreSQL, Redis and real workers; nothing else changes.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# --- Core -------------------------------------------------------------------------------

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-development-key-only-for-the-embedded-default"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "elections",
    "metrics",
    "protocols",
    "forensics",
    "dashboard",
    "alerts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Dashboard pages in English or Russian: the language switch (session/cookie), else Accept-Language.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Pages (dashboard, admin) answer a lost database with 503, as the API does.
    "election_monitor.middleware.DatabaseUnavailableMiddleware",
]

if not DEBUG:
    # Serves the collected static files (admin, /api/docs/) from gunicorn; runserver does it
    # itself with DEBUG on.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "election_monitor.urls"
WSGI_APPLICATION = "election_monitor.wsgi.application"
ASGI_APPLICATION = "election_monitor.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ru", "Русский")]
# The dashboard's catalogue first: where a contrib app translates the same word otherwise
# (the admin's "Hour"), the dashboard's pages say what their translator chose.
LOCALE_PATHS = [BASE_DIR / "dashboard" / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Production serves hashed, compressed files collected at image build (Dockerfile).
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Database ---------------------------------------------------------------------------
# SQLite by default; DATABASE_URL=postgres://... for PostgreSQL (psycopg 3).

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # IMMEDIATE transactions and a busy timeout keep concurrent writers from failing with
    # "database is locked" in the embedded default.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# --- Cache ------------------------------------------------------------------------------
# Local memory by default; REDIS_URL=redis://... for django-redis. Timeouts are short so that
# a Redis outage degrades to answering from the database instead of hanging requests.

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "em"),
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": 0.5,
                "SOCKET_TIMEOUT": 0.5,
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "election-monitor",
            "OPTIONS": {"MAX_ENTRIES": 10000},
        }
    }

# --- Celery -----------------------------------------------------------------------------
# Without CELERY_BROKER_URL tasks run eagerly in-process (after commit), so the embedded
# default stays current without a worker.

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
if CELERY_TASK_ALWAYS_EAGER:
    CELERY_BROKER_URL = "memory://"  # never contacted: eager tasks run in-process
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = int(os.environ.get("CELERY_TASK_SOFT_TIME_LIMIT", "1500"))
CELERY_TASK_TIME_LIMIT = int(os.environ.get("CELERY_TASK_TIME_LIMIT", "1800"))
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A publish to an unreachable broker must fail fast: the dirty set in the database keeps
# the work, and the beat sweep picks it up.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
    "socket_connect_timeout": 1,
    "socket_timeout": 5,
    # Redis redelivers an unacknowledged task (acks_late, worker killed) after this long.
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600")),
}
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

# --- REST framework ---------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["elections.permissions.ReadOrIngest"],
    "DEFAULT_PARSER_CLASSES": [
        "election_monitor.parsers.StrictJSONParser",
        # The browsable API's forms.
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "election_monitor.pagination.StandardPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["election_monitor.throttling.FailOpenAnonRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": os.environ.get("ANON_THROTTLE_RATE", "600/minute")},
    # How many proxies in front of the app append to X-Forwarded-For: the throttle identifies
    # a client by the address the outermost trusted one saw. 0 (the default): REMOTE_ADDR,
    # and X-Forwarded-For is ignored; DRF's own default (None) trusted the raw header, so a
    # client sending a random one per request was never throttled.
    "NUM_PROXIES": int(os.environ.get("TRUSTED_PROXY_COUNT", "0")),
    "EXCEPTION_HANDLER": "election_monitor.exceptions.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Election Monitor API",
    "DESCRIPTION": "Hourly statistics, constituency and election metrics and anomaly flags.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI served from our own static files: /api/docs/ works without internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Anomalies and episodes share one kind enum: named once, not after a hash.
    "ENUM_NAME_OVERRIDES": {"AnomalyKindEnum": "metrics.models.AnomalyKind"},
    # The schema and the docs follow the read permission: closed to anonymous users unless
    # ALLOW_ANONYMOUS_READ is on.
    "SERVE_PERMISSIONS": ["elections.permissions.ReadOrIngest"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "election_monitor.schema.document_common_errors",
        "election_monitor.csv_export.schema_add_format_parameter",
    ],
}

# Forensic figures are cached under their protocol import (forensics/cache.py): an entry can
# never go stale, so it lives long and ages out only to free memory.
FORENSICS_CACHE_TTL = int(os.environ.get("FORENSICS_CACHE_TTL", "86400"))

# Where the dashboard sends a reader who must sign in (anonymous reads off).
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:elections"

# Anonymous reads: on in the demo (DEBUG), off by default in production.
METRICS_ALLOW_ANONYMOUS_READ = env_bool("ALLOW_ANONYMOUS_READ", DEBUG)

# --- Elections and metrics --------------------------------------------------------------

# An election stays "active" this long after ends_at, to take late data.
ELECTION_GRACE_PERIOD_HOURS = float(os.environ.get("ELECTION_GRACE_PERIOD_HOURS", "6"))
# A transaction's timestamp lies at most this many days outside its election's voting window.
TRANSACTION_WINDOW_SLACK_DAYS = float(os.environ.get("TRANSACTION_WINDOW_SLACK_DAYS", "30"))
# POST /api/transactions/ accepts lists up to this size.
INGEST_MAX_BATCH = int(os.environ.get("INGEST_MAX_BATCH", "10000"))
# Largest request body. A legal list of INGEST_MAX_BATCH items with 128-character hashes and
# every optional field is about 3 MB compact and 4.5 MB indented; Django's default (2.5 MiB)
# refused it. Larger bodies are a JSON 413 (election_monitor/exceptions.py).
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("REQUEST_BODY_MAX_BYTES", str(10 * 2**20)))

# Anomaly rules (docs/METRICS.md#anomaly-rules): weights and thresholds.
ANOMALY_WEIGHTS = {
    "turnout_over_100": float(os.environ.get("ANOMALY_WEIGHT_TURNOUT_OVER_100", "5")),
    "votes_exceed_bulletins": float(os.environ.get("ANOMALY_WEIGHT_VOTES_EXCEED_BULLETINS", "3")),
    "velocity_spike": float(os.environ.get("ANOMALY_WEIGHT_VELOCITY_SPIKE", "2")),
    "outside_voting_window": float(os.environ.get("ANOMALY_WEIGHT_OUTSIDE_VOTING_WINDOW", "1")),
    "stream_protocol_mismatch": float(os.environ.get("ANOMALY_WEIGHT_STREAM_PROTOCOL_MISMATCH", "4")),
}
ANOMALY_SPIKE_K = float(os.environ.get("ANOMALY_SPIKE_K", "5"))
ANOMALY_SPIKE_MIN_VOTES = int(os.environ.get("ANOMALY_SPIKE_MIN_VOTES", "20"))
ANOMALY_SPIKE_MIN_PEERS = int(os.environ.get("ANOMALY_SPIKE_MIN_PEERS", "5"))

# Circuit breakers (election_monitor/resilience.py): after a cache or broker failure, seconds
# before this process tries that service again (meanwhile: reads from the database, flushes
# left to the sweep).
CIRCUIT_BREAKER_RESET_SECONDS = float(os.environ.get("CIRCUIT_BREAKER_RESET_SECONDS", "5"))

# Pipeline: how long a flush waits to gather a burst, how many dirty marks it takes per
# round, and how long the "flush already queued" flag lives if its task is lost.
METRICS_FLUSH_DEBOUNCE_SECONDS = float(os.environ.get("METRICS_FLUSH_DEBOUNCE_SECONDS", "0.3"))
METRICS_FLUSH_BATCH = int(os.environ.get("METRICS_FLUSH_BATCH", "5000"))
# Constituencies per task of a parallel full recompute (metrics/parallel.py); an election
# with no more than this is recomputed by one task, in one pass.
METRICS_RECOMPUTE_PART_SIZE = int(os.environ.get("METRICS_RECOMPUTE_PART_SIZE", "10000"))
METRICS_FLUSH_PENDING_TTL = int(os.environ.get("METRICS_FLUSH_PENDING_TTL", "15"))

# Cache TTLs: short while an election can still change, long once it is closed.
METRICS_CACHE_TTL_ACTIVE = int(os.environ.get("METRICS_CACHE_TTL_ACTIVE", "30"))
METRICS_CACHE_TTL_CLOSED = int(os.environ.get("METRICS_CACHE_TTL_CLOSED", str(24 * 3600)))
# Seconds a process reuses an election's figures version read from the database before
# asking again: the longest a failed cache write can leave a reader stale (metrics/cache.py).
METRICS_VERSION_RECHECK_SECONDS = float(os.environ.get("METRICS_VERSION_RECHECK_SECONDS", "1"))

# --- Alerts and e-mail ------------------------------------------------------------------
# Alert deliveries (SPEC section 12, README "Alerts"): webhooks over HTTP, e-mail through
# Django's e-mail framework. The console backend prints e-mails to the worker's output; set
# EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend and the EMAIL_* below for SMTP.

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
# Seconds an SMTP connection may block, like the webhook timeout below.
EMAIL_TIMEOUT = float(os.environ.get("EMAIL_TIMEOUT", "10"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "election-monitor@localhost")

# Seconds a webhook POST may block on connecting or reading its answer.
ALERTS_HTTP_TIMEOUT = float(os.environ.get("ALERTS_HTTP_TIMEOUT", "5"))
# Attempts per delivery before it is recorded failed; retries wait base × 2^(attempt - 1)
# seconds (half of it random jitter), at most the cap.
ALERTS_MAX_ATTEMPTS = int(os.environ.get("ALERTS_MAX_ATTEMPTS", "8"))
ALERTS_RETRY_BASE_SECONDS = float(os.environ.get("ALERTS_RETRY_BASE_SECONDS", "2"))
ALERTS_RETRY_MAX_SECONDS = float(os.environ.get("ALERTS_RETRY_MAX_SECONDS", "300"))
# Seconds a worker owns a delivery it is sending; after that another may take it over and
# resend with the same delivery id. The delivery task is killed at half of it, so an attempt
# never outlives its lease.
ALERTS_LEASE_SECONDS = float(os.environ.get("ALERTS_LEASE_SECONDS", "60"))
# The recovery job re-queues pending deliveries overdue by this many seconds, and dispatches
# episode events recorded up to this many hours ago that were never dispatched.
ALERTS_REQUEUE_AFTER_SECONDS = float(os.environ.get("ALERTS_REQUEUE_AFTER_SECONDS", "30"))
ALERTS_DISPATCH_LOOKBACK_HOURS = float(os.environ.get("ALERTS_DISPATCH_LOOKBACK_HOURS", "24"))

# --- Security (production: DEBUG off) ---------------------------------------------------

# Admin logins (election_monitor/admin_login.py): a client is refused for the window after
# this many failures for one username (four times as many for all usernames together).
ADMIN_LOGIN_MAX_FAILURES = int(os.environ.get("ADMIN_LOGIN_MAX_FAILURES", "5"))
ADMIN_LOGIN_LOCKOUT_SECONDS = int(os.environ.get("ADMIN_LOGIN_LOCKOUT_SECONDS", "900"))

if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

# --- Logging ----------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
