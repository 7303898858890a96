"""PotaFlow settings: one module, driven by the environment (12-factor).

With nothing set, PotaFlow runs on embedded defaults: DEBUG on, SQLite in
``var/`` and kombu's filesystem broker, so ``make run`` works on a bare
machine. ``DATABASE_URL`` and ``CELERY_BROKER_URL`` switch to PostgreSQL and
Redis. Every variable is documented in ``.env.example``.
"""

import re
import urllib.parse
from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from potaflow import worker_pool

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A .env file is read when present; real environment variables win over it.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Where the embedded defaults keep their state (SQLite file, broker folders).
VAR_DIR = Path(env("POTAFLOW_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# ---------------------------------------------------------------------------
# Core
# https://docs.djangoproject.com/en/5.2/ref/settings/#core-settings
# ---------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=True)

SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off: export SECRET_KEY to a long random "
            'string, e.g. python -c "import secrets; print(secrets.token_urlsafe(50))"'
        )
    SECRET_KEY = "django-insecure-potaflow-development-only-never-use-in-production"  # noqa: S105 - DEBUG only

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # The admin is discovered with the URLs (potaflow/urls.py), not at start-up: worker and beat never
    # import it, nor the API and DRF it pulls in (~20 MiB less per process; bench/README.md "Memory").
    "django.contrib.admin.apps.SimpleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc served from our static files, not a CDN
    "django_celery_beat",
    "accounts",
    "integrations",
    "workflows",
    "webui",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy with a per-request nonce; Cache-Control: no-store on the API and member pages.
    "potaflow.security_headers.SecurityHeadersMiddleware",
    # A database that does not answer: 503 with Retry-After, counted (potaflow.database_errors).
    "potaflow.database_errors.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Unknown /api/ and /hooks/ URLs: the JSON error shape, with DEBUG too (outside CommonMiddleware's slash redirect).
    "core.errors.JsonNotFoundMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "potaflow.urls"
WSGI_APPLICATION = "potaflow.wsgi.application"
ASGI_APPLICATION = "potaflow.asgi.application"

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
            ],
        },
    },
]

# ---------------------------------------------------------------------------
# Database
# SQLite by default (WAL + busy timeout so web, worker and beat share it);
# DATABASE_URL=postgres://user:pass@host:5432/name for production.
# ---------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'potaflow.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        # Take the write lock at BEGIN: avoids "database is locked" on lock upgrade.
        "transaction_mode": "IMMEDIATE",
    }
    # A file, not :memory:, so a test's Celery worker subprocess shares it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# DATABASE_URL points at PgBouncer in transaction pooling (README "Scaling out"): consecutive
# transactions of one connection may run on different server connections, so nothing may rely
# on session state. PotaFlow itself keeps none (single-statement claims and leases, no advisory
# lock, no SET outside a transaction); this turns off what Django would keep: server-side cursors
# (.iterator() outside a transaction) and prepared statements (off by default in Django 5).
POTAFLOW_PGBOUNCER = env.bool("POTAFLOW_PGBOUNCER", default=False)
if POTAFLOW_PGBOUNCER and DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("POTAFLOW_PGBOUNCER=true needs DATABASE_URL=postgres://... (PgBouncer's address).")
if POTAFLOW_PGBOUNCER:
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    if _db_options.get("server_side_binding") or _db_options.get("prepare_threshold") is not None:
        raise ImproperlyConfigured(
            "POTAFLOW_PGBOUNCER=true: prepared statements (server_side_binding, prepare_threshold) do not "
            "survive transaction pooling in PgBouncer < 1.21; remove them from DATABASE_URL."
        )
    _db_options["prepare_threshold"] = None

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Throttle counters live in the cache, so it must be shared by every web process:
# Redis in production (CACHE_URL=redis://...); on the embedded defaults a
# file-based cache under var/ (shared by the processes of one machine, which is
# what `make run` starts). A process-local cache would multiply every limit by
# the number of processes; `check --deploy` warns about one (accounts.W001).
if env("CACHE_URL", default=""):
    CACHES = {"default": env.cache("CACHE_URL")}
else:
    CACHES = {
        "default": {
            "BACKEND": "core.cache.LockingFileBasedCache",  # atomic counters (login throttle)
            "LOCATION": str(VAR_DIR / "cache"),
            # Django's default (300) would let a spray of made-up emails evict live throttle counters.
            "OPTIONS": {"MAX_ENTRIES": 20_000},
        }
    }

# ---------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Every member signs in on the member pages; the admin keeps its own staff-only login.
LOGIN_URL = "webui:login"
# Django's backend behind the login throttle (accounts.login_throttle): the API and the admin share it.
AUTHENTICATION_BACKENDS = ["accounts.backends.ThrottledModelBackend"]

# ---------------------------------------------------------------------------
# I18N, static files
# ---------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(VAR_DIR / "static")))
# whitenoise warns at startup when the folder is missing (before collectstatic).
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": env(
            "POTAFLOW_STATICFILES_STORAGE",
            default="django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage",
        )
    },
}

# ---------------------------------------------------------------------------
# Security (production: DEBUG=false). `manage.py check --deploy` is clean.
# ---------------------------------------------------------------------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
POTAFLOW_BEHIND_PROXY = env.bool("POTAFLOW_BEHIND_PROXY", default=False)
if POTAFLOW_BEHIND_PROXY:
    # Only behind a proxy that sets this header itself; otherwise clients could spoof it.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Peers whose X-Forwarded-For is believed (addresses or networks); see core/client_ip.py.
# Behind a proxy the default is loopback and the private networks; otherwise nobody.
POTAFLOW_TRUSTED_PROXIES = env.list(
    "POTAFLOW_TRUSTED_PROXIES",
    default=["127.0.0.0/8", "::1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
    if POTAFLOW_BEHIND_PROXY
    else [],
)
# The healthcheck and Prometheus' scrape answer over plain HTTP inside the container network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]

# ---------------------------------------------------------------------------
# REST API: JWT (simplejwt), one error shape, throttled auth endpoints
# https://www.django-rest-framework.org/api-guide/settings/
# ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # simplejwt's, refusing access tokens of revoked token families (accounts.tokens).
        "accounts.tokens.FamilyJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "potaflow.api.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": env.int("POTAFLOW_API_PAGE_SIZE", default=50),
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "potaflow.api.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "auth": env("POTAFLOW_AUTH_THROTTLE_RATE", default="20/min"),
    },
    # DRF's own get_ident must never believe X-Forwarded-For; ours use core.client_ip.
    "NUM_PROXIES": 0,
}
# Failed logins (API and admin) are limited per client address at the "auth" rate above, and per
# account at this rate, except from addresses the account logged in from in the last N days.
POTAFLOW_LOGIN_ACCOUNT_RATE = env("POTAFLOW_LOGIN_ACCOUNT_RATE", default="10/h")
POTAFLOW_LOGIN_KNOWN_ADDRESS_DAYS = env.int("POTAFLOW_LOGIN_KNOWN_ADDRESS_DAYS", default=30)

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("POTAFLOW_ACCESS_TOKEN_MINUTES", default=10)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("POTAFLOW_REFRESH_TOKEN_DAYS", default=7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "USER_ID_FIELD": "id",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "PotaFlow API",
    "DESCRIPTION": "Workflow automation: webhooks, schedules and manual runs driving ordered actions.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The error shape, the webhook endpoint and the auth flow: see potaflow/openapi.py.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "potaflow.openapi.postprocess"],
    # Runs and step runs both have a "status": name the two enums apart.
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "workflows.models.RunStatus",
        "StepRunStatusEnum": "workflows.models.StepRunStatus",
    },
}

# ---------------------------------------------------------------------------
# Celery: no loss (acks late, requeue on worker loss, one message at a time)
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
# ---------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        "control_folder": str(_broker_dir / "control"),
        "polling_interval": 0.1,
    }
    # kombu's filesystem transport with whole messages only (core/file_broker.py).
    CELERY_BROKER_TRANSPORT = "core.file_broker:Transport"
else:
    # Redis redelivers an unacked message after this many seconds. It must
    # exceed the longest retry countdown (backoff_max_seconds), or a delayed
    # retry would be delivered twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("POTAFLOW_BROKER_VISIBILITY_TIMEOUT", default=3600),
        # How often (seconds, and every Nth poll) a worker looks for such messages to restore.
        "unacked_restore_interval": env.int("POTAFLOW_BROKER_RESTORE_INTERVAL", default=10),
        "unacked_restore_throttle": env.int("POTAFLOW_BROKER_RESTORE_THROTTLE", default=10),
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Messages a worker holds per pool process (unacknowledged: a lost worker's come
# back after the visibility timeout, or sooner through the sweeper).
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("POTAFLOW_WORKER_PREFETCH_MULTIPLIER", default=1)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # outputs live in the database, not a result backend
# Pool processes: at most POTAFLOW_WORKER_CONCURRENCY, grown from POTAFLOW_WORKER_MIN_CONCURRENCY as a
# backlog forms and shrunk back when idle (Celery's autoscaler, potaflow.worker_pool says why and measured).
CELERY_WORKER_CONCURRENCY = env.int("POTAFLOW_WORKER_CONCURRENCY", default=worker_pool.DEFAULT_CONCURRENCY)
POTAFLOW_WORKER_MIN_CONCURRENCY = env.int(
    "POTAFLOW_WORKER_MIN_CONCURRENCY", default=worker_pool.DEFAULT_MIN_CONCURRENCY
)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Keep the worker's database connection across tasks (Celery's Django fixup
# closes it around every task otherwise; CONN_MAX_AGE and CONN_HEALTH_CHECKS
# still retire old or broken ones, see workflows.apps). Each pool child opens
# its own after the fork.
CELERY_DB_REUSE_MAX = 1_000_000_000
# On a lost broker connection, let running steps finish instead of killing
# them: each records its real outcome, and the redelivered copy of its message
# (its ack went down with the connection) finds the step done and is dropped.
# Cancelling would turn every in-flight call into an attempt of unknown outcome.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# A pool child whose resident memory grew past this (KiB) is replaced after its
# task: a bloated run never leaves a large process behind.
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env.int("POTAFLOW_WORKER_MAX_RSS_MB", default=400) * 1024
# Hard ceiling on a pool child's heap (MiB, RLIMIT_DATA): a step allocating
# past it fails with a MemoryError naming this setting. 0: no ceiling.
POTAFLOW_WORKER_MEMORY_LIMIT_MB = env.int("POTAFLOW_WORKER_MEMORY_LIMIT_MB", default=1024)
# Each worker writes its memory and liveness to the database this often (workflows/ops/heartbeat.py);
# /metrics reports potaflow_worker_resident_memory_bytes and potaflow_workers_alive from it.
POTAFLOW_WORKER_HEARTBEAT_SECONDS = env.int("POTAFLOW_WORKER_HEARTBEAT_SECONDS", default=15)
CELERY_TIMEZONE = "UTC"
# django-celery-beat's DatabaseScheduler, kept in a heap by due time: 10,000 schedules firing
# the same minute cost beat well under a second (workflows/scheduling/scheduler.py).
CELERY_BEAT_SCHEDULER = "workflows.scheduling.scheduler:HeapDatabaseScheduler"
# Schedule workflows per workflows.fire_schedules message beat sends when they are due together.
# A worker process records a message's firings before dispatching any: 5,000 lets the default
# two pool processes record 10,000 firings of a minute in parallel, one message each.
POTAFLOW_SCHEDULE_BATCH_SIZE = env.int("POTAFLOW_SCHEDULE_BATCH_SIZE", default=5000)
# Several beats may run (one per host, for availability): only the holder of a lease row in the
# database sends (workflows/scheduling/leader.py). A standby takes over at most this many seconds
# (plus a tick) after the leader stops renewing; keep it well under a minute, or a minute's firings
# can be skipped at a takeover. POTAFLOW_BEAT_LEADER_ELECTION=false: every beat sends (one beat only!).
POTAFLOW_BEAT_LEASE_SECONDS = env.int("POTAFLOW_BEAT_LEASE_SECONDS", default=20)
POTAFLOW_BEAT_LEADER_ELECTION = env.bool("POTAFLOW_BEAT_LEADER_ELECTION", default=True)
# Firings have a queue of their own, which every worker consumes with the default one: a
# backlog of steps must not make a minute's firings wait (the scheduled minute is in the run
# either way; this keeps "scheduled -> run recorded" short). Each queue has its own exchange
# and routing key so that a message goes to one queue only.
POTAFLOW_SCHEDULE_QUEUE = "potaflow.schedules"
# Test runs (POST /api/workflows/<id>/test/) run on the workers too, in a queue of their own: a backlog of
# steps does not keep a user waiting for a test, and the web threads never run one.
POTAFLOW_TEST_QUEUE = "potaflow.tests"
# Step messages that must not wait behind a backlog, in a queue of their own that every worker consumes
# with the default one (Redis: the worker's BRPOP serves its queues in turn): the take-over of a lapsed
# lease, a parked step its organization's free slot
# wakes (workflows.execution.dispatch, workflows.execution.fairness).
POTAFLOW_RECOVERY_QUEUE = "potaflow.recovery"
# RabbitMQ (CELERY_BROKER_URL=amqp://...): quorum queues (replicated, durable, no message lost
# with a node; a delivery limit instead of endless redelivery), publisher confirms (a publish
# returns once the broker has the message), and topic exchanges because Celery's native delayed
# delivery (how a retry's countdown works on quorum queues: the message waits in the broker's
# celery_delayed_* queues, never held unacknowledged by a worker) only binds topic exchanges.
# README "Scaling out" says what changes against Redis (prefetch, ETA, the schedules queue).
POTAFLOW_BROKER_IS_AMQP = CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://"))
if POTAFLOW_BROKER_IS_AMQP:
    _queue_kwargs: dict[str, Any] = {"queue_arguments": {"x-queue-type": "quorum"}, "durable": True}
    _exchange_type = "topic"
    CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"
    CELERY_TASK_DEFAULT_EXCHANGE_TYPE = "topic"
    CELERY_WORKER_DETECT_QUORUM_QUEUES = True  # quorum queues have no global QoS: per-consumer prefetch
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
    # AMQP heartbeats (seconds): a worker host that vanished (no FIN) is noticed by RabbitMQ after
    # about two missed beats; then its unacknowledged messages go to other workers, and its node
    # name (exclusive remote-control queue) is free for the host when it comes back.
    CELERY_BROKER_HEARTBEAT = env.int("POTAFLOW_BROKER_HEARTBEAT", default=15)
else:
    _queue_kwargs, _exchange_type = {}, "direct"
CELERY_TASK_QUEUES = (
    Queue("celery", Exchange("celery", type=_exchange_type), routing_key="celery", **_queue_kwargs),
    Queue(
        POTAFLOW_SCHEDULE_QUEUE,
        Exchange(POTAFLOW_SCHEDULE_QUEUE, type=_exchange_type),
        routing_key=POTAFLOW_SCHEDULE_QUEUE,
        **_queue_kwargs,
    ),
    Queue(
        POTAFLOW_TEST_QUEUE,
        Exchange(POTAFLOW_TEST_QUEUE, type=_exchange_type),
        routing_key=POTAFLOW_TEST_QUEUE,
        **_queue_kwargs,
    ),
    Queue(
        POTAFLOW_RECOVERY_QUEUE,
        Exchange(POTAFLOW_RECOVERY_QUEUE, type=_exchange_type),
        routing_key=POTAFLOW_RECOVERY_QUEUE,
        **_queue_kwargs,
    ),
)
CELERY_TASK_ROUTES = {
    "workflows.fire_schedules": {"queue": POTAFLOW_SCHEDULE_QUEUE},
    "workflows.execute_test_run": {"queue": POTAFLOW_TEST_QUEUE},
}
CELERY_TASK_ALWAYS_EAGER = False

# ---------------------------------------------------------------------------
# PotaFlow
# ---------------------------------------------------------------------------
# Public origin used to build absolute webhook URLs when no request is at hand.
POTAFLOW_BASE_URL = env("POTAFLOW_BASE_URL", default="http://127.0.0.1:8000")
POTAFLOW_WEBHOOK_MAX_BYTES = env.int("POTAFLOW_WEBHOOK_MAX_BYTES", default=1024 * 1024)
# Largest request body (API, admin forms); larger: 413 in the error shape under /api/.
# Never below the webhook limit, or webhook bodies would not reach the webhook view's own 413.
POTAFLOW_MAX_BODY_BYTES = env.int("POTAFLOW_MAX_BODY_BYTES", default=2_621_440)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(POTAFLOW_MAX_BODY_BYTES, POTAFLOW_WEBHOOK_MAX_BYTES + 1)
# Seconds a client has to send a request body under gunicorn (potaflow/body_deadline.py); later: 408.
POTAFLOW_WEB_BODY_TIMEOUT = env.float("POTAFLOW_WEB_BODY_TIMEOUT", default=20.0)
# The web server reads every request whole before a thread takes it (potaflow/web_worker.py): the request line
# and headers within this many seconds (later: 408), and at most this many connections per client address
# (IPv6: per /64) per web process, POTAFLOW_TRUSTED_PROXIES excepted (more: 503). 0: no cap.
POTAFLOW_WEB_HEADER_TIMEOUT = env.float("POTAFLOW_WEB_HEADER_TIMEOUT", default=10.0)
POTAFLOW_WEB_MAX_CONNECTIONS_PER_ADDRESS = env.int("POTAFLOW_WEB_MAX_CONNECTIONS_PER_ADDRESS", default=50)
# Request bodies one web process holds at once while they arrive (in memory up to 256 KiB each, then in
# anonymous temporary files), counted from each Content-Length before it is read: a webhook's files reach the
# front whole, so this bounds the disk anyone can make it fill. Over it: 503 with Retry-After. 0: no cap.
POTAFLOW_WEB_SPOOL_MAX_BYTES = env.int("POTAFLOW_WEB_SPOOL_MAX_BYTES", default=512 * 1024 * 1024)
# Per-workflow webhook intake limit, shared through the cache (workflows.intake.ratelimit): N/s, N/min, N/h or off.
POTAFLOW_WEBHOOK_RATE = env("POTAFLOW_WEBHOOK_RATE", default="50/s")
if not re.fullmatch(r"\s*(off|none|0|\d+\s*/\s*(s|sec|second|m|min|minute|h|hour))\s*", POTAFLOW_WEBHOOK_RATE.lower()):
    raise ImproperlyConfigured(
        f"POTAFLOW_WEBHOOK_RATE={POTAFLOW_WEBHOOK_RATE!r} is not a rate like 50/s, 600/min or 10000/h (or off)."
    )
# Most events accepted at once (default: the rate's N).
POTAFLOW_WEBHOOK_BURST = env.int("POTAFLOW_WEBHOOK_BURST", default=0) or None
# Header and query-parameter names whose values are stored as "[redacted]" in run payloads and masked in
# logs (each replaces its default list; entries are names, fnmatch patterns or !exemptions: core.redaction).
POTAFLOW_REDACT_HEADERS = env.list(
    "POTAFLOW_REDACT_HEADERS",
    default=[
        *("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token"),
        *("x-access-token", "x-csrf-token", "x-amz-security-token"),
        # Checked before anything is stored, and kept out of payloads all the same:
        *("webhook-signature", "x-hub-signature", "x-hub-signature-256", "stripe-signature", "x-slack-signature"),
        # GitLab: webhook secret, API token headers (docs.gitlab.com: webhooks; REST API authentication).
        *("x-gitlab-token", "private-token", "job-token"),
        # Shopify: Admin API token, webhook HMAC (shopify.dev: authentication; webhooks).
        *("x-shopify-access-token", "x-shopify-hmac-sha256"),
        # Twilio: request signature (its Auth Token is sent as Basic authorization, covered above).
        "x-twilio-signature",
        # Generic carriers: *-token, *-key, *secret*, *authorization*, *password*, *signature*, *session*...
        *("*-token", "*_token", "*-key", "*_key", "*apikey*", "*secret*", "*authorization*", "*password*"),
        *("*-signature", "*session*", "*-auth"),
        # ...except these well-known names, which are not secrets (and the idempotency key is read by intake).
        *("!idempotency-key", "!x-idempotency-key", "!sec-websocket-key"),
    ],
)
POTAFLOW_REDACT_QUERY = env.list(
    "POTAFLOW_REDACT_QUERY",
    default=[
        *("token", "access_token", "refresh_token", "id_token", "api_key", "apikey", "key", "secret"),
        *("client_secret", "password", "passwd", "auth", "signature", "sig", "code"),
        # JWTs and sessions in URLs; GitLab's ?private_token=; AWS pre-signed URLs (X-Amz-Signature...).
        *("access-token", "jwt", "session", "sessionid", "session_id", "sid", "private_token", "hmac"),
        *("x-amz-signature", "x-amz-credential", "x-amz-security-token"),
        # Generic, as for headers.
        *("*_token", "*-token", "*_key", "*-key", "*secret*", "*password*", "*signature*"),
    ],
)
POTAFLOW_STEP_OUTPUT_MAX_BYTES = env.int("POTAFLOW_STEP_OUTPUT_MAX_BYTES", default=64 * 1024)
# Files (workflows.files): where uploaded and produced files are kept, outside the database.
# Empty: local disk under POTAFLOW_VAR_DIR/files; a path or file:///path: that folder;
# s3://bucket/prefix: an S3-compatible bucket through django-storages (AWS_S3_ENDPOINT_URL,
# AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_S3_REGION_NAME).
POTAFLOW_FILE_STORAGE = env("POTAFLOW_FILE_STORAGE", default="")
AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL", default="") or None
AWS_ACCESS_KEY_ID = env("AWS_ACCESS_KEY_ID", default="") or None
AWS_SECRET_ACCESS_KEY = env("AWS_SECRET_ACCESS_KEY", default="") or None
AWS_S3_REGION_NAME = env("AWS_S3_REGION_NAME", default="") or None
# Largest uploaded (or step-produced) file; largest multipart webhook request (files and fields);
# files per request; bytes of files an organization may keep (0: no quota).
POTAFLOW_UPLOAD_MAX_BYTES = env.int("POTAFLOW_UPLOAD_MAX_BYTES", default=25 * 1024 * 1024)
POTAFLOW_UPLOAD_REQUEST_MAX_BYTES = env.int("POTAFLOW_UPLOAD_REQUEST_MAX_BYTES", default=100 * 1024 * 1024)
POTAFLOW_UPLOAD_MAX_FILES = env.int("POTAFLOW_UPLOAD_MAX_FILES", default=10)
POTAFLOW_FILE_QUOTA_BYTES = env.int("POTAFLOW_FILE_QUOTA_BYTES", default=1024 * 1024 * 1024)
# Lifetime of the download links the API hands out (signed; seconds).
POTAFLOW_FILE_LINK_SECONDS = env.int("POTAFLOW_FILE_LINK_SECONDS", default=900)
# Seconds a client has to send a webhook body larger than DATA_UPLOAD_MAX_MEMORY_SIZE (a webhook's files: the web
# server's front receives it whole, workflows.intake.lookup.body_deadline); later: 408 and nothing kept. 0: none.
POTAFLOW_UPLOAD_BODY_TIMEOUT = env.float("POTAFLOW_UPLOAD_BODY_TIMEOUT", default=600.0)
# An upload that never finished (its web process died mid-request) is deleted by the pruner after this long.
POTAFLOW_UPLOAD_ABANDONED_SECONDS = env.int("POTAFLOW_UPLOAD_ABANDONED_SECONDS", default=3600)
# file.parse bounds: rows, columns, characters per cell, and the size of its output (the rows as JSON,
# stored with the step instead of the POTAFLOW_STEP_OUTPUT_MAX_BYTES cap).
POTAFLOW_PARSE_MAX_ROWS = env.int("POTAFLOW_PARSE_MAX_ROWS", default=50_000)
POTAFLOW_PARSE_MAX_COLUMNS = env.int("POTAFLOW_PARSE_MAX_COLUMNS", default=200)
POTAFLOW_PARSE_MAX_CELL_CHARS = env.int("POTAFLOW_PARSE_MAX_CELL_CHARS", default=10_000)
POTAFLOW_PARSE_MAX_OUTPUT_BYTES = env.int("POTAFLOW_PARSE_MAX_OUTPUT_BYTES", default=16 * 1024 * 1024)
# Files a step sends (email attachments together, a Slack upload, an HTTP body) are read into memory: at most this.
POTAFLOW_SEND_FILE_MAX_BYTES = env.int("POTAFLOW_SEND_FILE_MAX_BYTES", default=25 * 1024 * 1024)


def file_storage_settings(
    value: str,
    *,
    endpoint_url: str | None = AWS_S3_ENDPOINT_URL,
    access_key: str | None = AWS_ACCESS_KEY_ID,
    secret_key: str | None = AWS_SECRET_ACCESS_KEY,
    region_name: str | None = AWS_S3_REGION_NAME,
) -> dict:
    """The ``STORAGES`` entry a ``POTAFLOW_FILE_STORAGE`` value means (tests build theirs with it too)."""
    parts = urllib.parse.urlsplit(value.strip())
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ImproperlyConfigured(f"POTAFLOW_FILE_STORAGE={value!r} names no bucket (s3://bucket/prefix).")
        return {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": parts.netloc,
                "location": parts.path.strip("/"),
                "endpoint_url": endpoint_url,
                "access_key": access_key,
                "secret_key": secret_key,
                "region_name": region_name,
                "file_overwrite": True,  # keys are ids or paths a step chose: a retry writes the same object again
                "default_acl": None,
                "max_memory_size": 1024 * 1024,  # a download spills to a temporary file past 1 MiB
            },
        }
    if parts.scheme in ("", "file"):
        folder = BASE_DIR / (parts.path or VAR_DIR / "files")  # a relative folder: from the project
        return {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(folder), "allow_overwrite": True, "base_url": None},
        }
    raise ImproperlyConfigured(f"POTAFLOW_FILE_STORAGE={value!r}: use a folder, file:///folder or s3://bucket/prefix.")


STORAGES["potaflow_files"] = file_storage_settings(POTAFLOW_FILE_STORAGE)
# A queued or retrying step whose message was lost is sent again after this long without progress -- when
# the broker no longer holds it (Redis: neither queued nor held by a worker that is still young), so a run
# merely queued behind a backlog is not re-sent (workflows.execution.inflight).
POTAFLOW_STALLED_AFTER_SECONDS = env.int("POTAFLOW_STALLED_AFTER_SECONDS", default=20)
# Where the sweeper can look into the broker (Redis), a run without progress whose message is neither queued
# nor held by a worker is sent again after this long instead (a broker restarted empty loses every queued
# message at once: each second of this window is a second of the whole backlog's delay).
POTAFLOW_LOST_AFTER_SECONDS = env.int("POTAFLOW_LOST_AFTER_SECONDS", default=5)
POTAFLOW_RECOVERY_INTERVAL_SECONDS = env.int("POTAFLOW_RECOVERY_INTERVAL_SECONDS", default=5)
# Flow control (issue 19): how often beat wakes the delays and waits that are due (seconds); the
# loop and definition bounds are with the other flow settings below.
POTAFLOW_WAIT_POLL_SECONDS = env.float("POTAFLOW_WAIT_POLL_SECONDS", default=2.0)
# Retention (workflows.ops.retention): days a finished run is kept, by status; 0 keeps it forever.
# Dead-lettered runs are kept until replayed or deleted.
POTAFLOW_RETAIN_SUCCEEDED_DAYS = env.int("POTAFLOW_RETAIN_SUCCEEDED_DAYS", default=7)
POTAFLOW_RETAIN_FAILED_DAYS = env.int("POTAFLOW_RETAIN_FAILED_DAYS", default=30)
POTAFLOW_RETAIN_FILTERED_DAYS = env.int("POTAFLOW_RETAIN_FILTERED_DAYS", default=3)
POTAFLOW_PRUNE_INTERVAL_SECONDS = env.int("POTAFLOW_PRUNE_INTERVAL_SECONDS", default=600)
POTAFLOW_PRUNE_BATCH_SIZE = env.int("POTAFLOW_PRUNE_BATCH_SIZE", default=500)
POTAFLOW_PRUNE_MAX_RUNS = env.int("POTAFLOW_PRUNE_MAX_RUNS", default=20_000)
# Insights' rollups (workflows.ops.insights), kept after their runs are pruned: hourly ones serve
# the 24 h window (at least 2 days: it and the day before), daily ones 7 d and 30 d (at least 60).
POTAFLOW_INSIGHTS_HOURLY_DAYS = env.int("POTAFLOW_INSIGHTS_HOURLY_DAYS", default=7)
POTAFLOW_INSIGHTS_DAILY_DAYS = env.int("POTAFLOW_INSIGHTS_DAILY_DAYS", default=400)
# A running step's worker renews its lease every third of this; a lapsed lease means the worker died.
POTAFLOW_STEP_LEASE_SECONDS = env.int("POTAFLOW_STEP_LEASE_SECONDS", default=15)
POTAFLOW_STEP_TIMEOUT_MAX_SECONDS = env.float("POTAFLOW_STEP_TIMEOUT_MAX_SECONDS", default=300.0)
# Steps of one organization running at once. -1 (default): work-conserving fair share -- no limit while no
# other organization has work waiting; while one does, half the worker's slots (at least one), the rest
# of its steps parked in the database (no re-publish) until one of its own slots frees. N > 0: a hard
# cap at all times (same parking). 0: no limit (workflows.execution.fairness).
POTAFLOW_ORG_MAX_RUNNING_STEPS = env.int("POTAFLOW_ORG_MAX_RUNNING_STEPS", default=-1)
# Flow control (issue 19): steps of a definition (nested ones and the error path included) and how deeply
# step lists nest in branches and loops; a for_each's max_items may not exceed POTAFLOW_FOR_EACH_MAX_ITEMS
# (its default max_items is 1,000 or this, the lower), nor its parallel POTAFLOW_FOR_EACH_MAX_PARALLEL.
POTAFLOW_FLOW_MAX_STEPS = env.int("POTAFLOW_FLOW_MAX_STEPS", default=200)
POTAFLOW_FLOW_MAX_DEPTH = env.int("POTAFLOW_FLOW_MAX_DEPTH", default=5)
POTAFLOW_FOR_EACH_MAX_ITEMS = env.int("POTAFLOW_FOR_EACH_MAX_ITEMS", default=1000)
POTAFLOW_FOR_EACH_MAX_PARALLEL = env.int("POTAFLOW_FOR_EACH_MAX_PARALLEL", default=10)
# Per render of a step's config: loop iterations, CPU seconds, characters of any string built.
POTAFLOW_TEMPLATE_MAX_ITERATIONS = env.int("POTAFLOW_TEMPLATE_MAX_ITERATIONS", default=100_000)
POTAFLOW_TEMPLATE_CPU_SECONDS = env.float("POTAFLOW_TEMPLATE_CPU_SECONDS", default=1.0)
POTAFLOW_TEMPLATE_MAX_CHARS = env.int("POTAFLOW_TEMPLATE_MAX_CHARS", default=1_000_000)
# Per template string, checked when it is saved, checked, imported and rendered: its length, and how deeply
# brackets, blocks, filters and calls nest (the parser and the renderer recurse once per level).
POTAFLOW_TEMPLATE_MAX_SOURCE_CHARS = env.int("POTAFLOW_TEMPLATE_MAX_SOURCE_CHARS", default=32_768)
POTAFLOW_TEMPLATE_MAX_NESTING = env.int("POTAFLOW_TEMPLATE_MAX_NESTING", default=32)
# Test runs (workflows.dry_run, executed by a worker): unfinished ones per organization at once (more: 429);
# seconds a step sent for real may take (the step's own timeout_seconds, capped); seconds the request waits
# for the result before answering 202 with a URL to poll (POTAFLOW_WEB_HEAVY_SLOTS threads at most wait).
POTAFLOW_TEST_RUN_MAX_CONCURRENT = env.int("POTAFLOW_TEST_RUN_MAX_CONCURRENT", default=2)
POTAFLOW_TEST_RUN_TIMEOUT_SECONDS = env.float("POTAFLOW_TEST_RUN_TIMEOUT_SECONDS", default=30.0)
POTAFLOW_TEST_RUN_WAIT_SECONDS = env.float("POTAFLOW_TEST_RUN_WAIT_SECONDS", default=10.0)
# Web threads per process that may wait for a test result, and that may check a template for the builder, at
# once (each): an eighth of POTAFLOW_WEB_THREADS, so the others always answer (/healthz, intake).
POTAFLOW_WEB_HEAVY_SLOTS = max(1, env.int("POTAFLOW_WEB_THREADS", default=16) // 8)
# Per user: test runs and template checks (the builder checks a field when it loses focus). Over: 429.
POTAFLOW_TEST_RUN_RATE = env("POTAFLOW_TEST_RUN_RATE", default="30/min")
POTAFLOW_TEMPLATE_CHECK_RATE = env("POTAFLOW_TEMPLATE_CHECK_RATE", default="120/min")
# How often beat deletes expired refresh tokens and token families (accounts.flush_expired_tokens).
POTAFLOW_TOKEN_FLUSH_INTERVAL_SECONDS = env.int("POTAFLOW_TOKEN_FLUSH_INTERVAL_SECONDS", default=3600)
POTAFLOW_HANDLER_MODULES = env.list("POTAFLOW_HANDLER_MODULES", default=[])
POTAFLOW_FERNET_KEYS = env.list("POTAFLOW_FERNET_KEYS", default=[])
POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = env.list("POTAFLOW_ALLOW_PRIVATE_DESTINATIONS", default=[])
POTAFLOW_SLACK_API_URL = env("POTAFLOW_SLACK_API_URL", default="https://slack.com/api/")
POTAFLOW_SENDGRID_API_URL = env("POTAFLOW_SENDGRID_API_URL", default="https://api.sendgrid.com")
POTAFLOW_GOOGLE_SHEETS_API_URL = env(
    "POTAFLOW_GOOGLE_SHEETS_API_URL", default="https://sheets.googleapis.com/v4/spreadsheets"
)
POTAFLOW_GOOGLE_DRIVE_API_URL = env(
    "POTAFLOW_GOOGLE_DRIVE_API_URL", default="https://www.googleapis.com/drive/v3/files"
)
# Failure notices (workflows.notices): the first failed run of a burst at once, the rest as one
# digest per interval; beat looks for digests that are due this often.
POTAFLOW_FAILURE_NOTICE_INTERVAL_SECONDS = env.int("POTAFLOW_FAILURE_NOTICE_INTERVAL_SECONDS", default=3600)
POTAFLOW_FAILURE_DIGEST_CHECK_SECONDS = env.int("POTAFLOW_FAILURE_DIGEST_CHECK_SECONDS", default=300)
# Samples kept per workflow ("listen for a test event" and saved samples); a listen lasts this long.
POTAFLOW_SAMPLES_PER_WORKFLOW = env.int("POTAFLOW_SAMPLES_PER_WORKFLOW", default=5)
POTAFLOW_LISTEN_SECONDS = env.int("POTAFLOW_LISTEN_SECONDS", default=300)

# Connections (integrations/oauth): the OAuth apps' credentials, set once by staff, never shown.
POTAFLOW_SLACK_CLIENT_ID = env("POTAFLOW_SLACK_CLIENT_ID", default="")
POTAFLOW_SLACK_CLIENT_SECRET = env("POTAFLOW_SLACK_CLIENT_SECRET", default="")
POTAFLOW_SLACK_OAUTH_AUTHORIZE_URL = env(
    "POTAFLOW_SLACK_OAUTH_AUTHORIZE_URL", default="https://slack.com/oauth/v2/authorize"
)
POTAFLOW_SLACK_OAUTH_SCOPES = env.list("POTAFLOW_SLACK_OAUTH_SCOPES", default=["chat:write", "chat:write.public"])
POTAFLOW_GOOGLE_CLIENT_ID = env("POTAFLOW_GOOGLE_CLIENT_ID", default="")
POTAFLOW_GOOGLE_CLIENT_SECRET = env("POTAFLOW_GOOGLE_CLIENT_SECRET", default="")
POTAFLOW_GOOGLE_OAUTH_AUTHORIZE_URL = env(
    "POTAFLOW_GOOGLE_OAUTH_AUTHORIZE_URL", default="https://accounts.google.com/o/oauth2/v2/auth"
)
POTAFLOW_GOOGLE_OAUTH_TOKEN_URL = env("POTAFLOW_GOOGLE_OAUTH_TOKEN_URL", default="https://oauth2.googleapis.com/token")
POTAFLOW_GOOGLE_OAUTH_REVOKE_URL = env(
    "POTAFLOW_GOOGLE_OAUTH_REVOKE_URL", default="https://oauth2.googleapis.com/revoke"
)
POTAFLOW_GOOGLE_USERINFO_URL = env(
    "POTAFLOW_GOOGLE_USERINFO_URL", default="https://openidconnect.googleapis.com/v1/userinfo"
)
# How long a started Connect may take before its callback is refused (the state expires).
POTAFLOW_OAUTH_STATE_SECONDS = env.int("POTAFLOW_OAUTH_STATE_SECONDS", default=600)
# Connects a user may have pending at once (each Connect click is one; older ones are dropped beyond it).
POTAFLOW_OAUTH_MAX_PENDING = env.int("POTAFLOW_OAUTH_MAX_PENDING", default=5)
# An access token this close to its expiry is refreshed before a step uses it.
POTAFLOW_OAUTH_REFRESH_MARGIN_SECONDS = env.int("POTAFLOW_OAUTH_REFRESH_MARGIN_SECONDS", default=120)
POTAFLOW_ADMIN_EMAIL = env("POTAFLOW_ADMIN_EMAIL", default="admin@example.com")
POTAFLOW_ADMIN_PASSWORD = env("POTAFLOW_ADMIN_PASSWORD", default="")

# ---------------------------------------------------------------------------
# Accounts in the browser and system e-mail (accounts.mail): verification,
# password reset, invitations and failure notices. EMAIL_URL is smtp://user:pass@host:port
# (smtp+tls:// for STARTTLS, smtps:// for TLS), consolemail:// (the worker's log) or
# filemail://<folder> (one file per message). Unset: files in $POTAFLOW_VAR_DIR/mail.
# ---------------------------------------------------------------------------
EMAIL_URL = env("EMAIL_URL", default="") or f"filemail://{VAR_DIR / 'mail'}"
_email = environ.Env.email_url_config(EMAIL_URL)  # raises ImproperlyConfigured naming an unknown scheme
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email["EMAIL_HOST"] or "localhost"
EMAIL_PORT = _email["EMAIL_PORT"] or 25
EMAIL_HOST_USER = _email["EMAIL_HOST_USER"] or ""
EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"] or ""
EMAIL_USE_TLS = bool(_email.get("EMAIL_USE_TLS"))
EMAIL_USE_SSL = bool(_email.get("EMAIL_USE_SSL"))
if EMAIL_URL.startswith("filemail://"):
    # filemail:///abs/folder or filemail://var/mail (relative to the project, as people write it).
    _mail_folder = Path(EMAIL_URL.removeprefix("filemail://").split("?", 1)[0])
    EMAIL_FILE_PATH = str(_mail_folder if _mail_folder.is_absolute() else BASE_DIR / _mail_folder)
EMAIL_TIMEOUT = env.int("POTAFLOW_EMAIL_TIMEOUT", default=10)
POTAFLOW_EMAIL_FROM = env("POTAFLOW_EMAIL_FROM", default="PotaFlow <potaflow@localhost>")
DEFAULT_FROM_EMAIL = SERVER_EMAIL = POTAFLOW_EMAIL_FROM
# Who may create an account: open (anyone, through /app/signup/ or the API), invite (only
# people holding an invitation) or closed (nobody; operators create users in the admin).
POTAFLOW_SIGNUP = env("POTAFLOW_SIGNUP", default="open").strip().lower()
if POTAFLOW_SIGNUP not in ("open", "invite", "closed"):
    raise ImproperlyConfigured(f"POTAFLOW_SIGNUP={POTAFLOW_SIGNUP!r} is not open, invite or closed.")
# Days an invitation link works; pending invitations an organization may have at once.
POTAFLOW_INVITATION_DAYS = env.int("POTAFLOW_INVITATION_DAYS", default=7)
POTAFLOW_MAX_PENDING_INVITATIONS = env.int("POTAFLOW_MAX_PENDING_INVITATIONS", default=50)
# Lifetime of e-mail verification and password-reset links (Django's PASSWORD_RESET_TIMEOUT).
PASSWORD_RESET_TIMEOUT = env.int("POTAFLOW_ACCOUNT_LINK_HOURS", default=24) * 3600

CELERY_BEAT_SCHEDULE = {
    "potaflow-recover-stalled-runs": {
        "task": "workflows.recover_stalled_runs",
        "schedule": float(POTAFLOW_RECOVERY_INTERVAL_SECONDS),
    },
    "potaflow-wake-waits": {
        "task": "workflows.wake_waits",
        "schedule": float(POTAFLOW_WAIT_POLL_SECONDS),
    },
    "potaflow-flush-expired-tokens": {
        "task": "accounts.flush_expired_tokens",
        "schedule": float(POTAFLOW_TOKEN_FLUSH_INTERVAL_SECONDS),
    },
    "potaflow-prune-runs": {
        "task": "workflows.prune_runs",
        "schedule": float(POTAFLOW_PRUNE_INTERVAL_SECONDS),
    },
    "potaflow-failure-digests": {
        "task": "workflows.send_failure_digests",
        "schedule": float(POTAFLOW_FAILURE_DIGEST_CHECK_SECONDS),
    },
}

# ---------------------------------------------------------------------------
# Operations: metrics, health (see README "Operating PotaFlow")
# ---------------------------------------------------------------------------
# When set, GET /metrics requires "Authorization: Bearer <token>" (401 otherwise). Without a token, /metrics is
# open only with POTAFLOW_METRICS_ALLOW_OPEN (default: DEBUG; set it true in production only when nothing but your
# monitoring reaches the port); otherwise 403.
POTAFLOW_METRICS_TOKEN = env("POTAFLOW_METRICS_TOKEN", default="")
POTAFLOW_METRICS_ALLOW_OPEN = env.bool("POTAFLOW_METRICS_ALLOW_OPEN", default=DEBUG)
# Seconds a client is told to wait (Retry-After) when the database does not answer (503).
POTAFLOW_DB_RETRY_AFTER_SECONDS = env.int("POTAFLOW_DB_RETRY_AFTER_SECONDS", default=5)
# /healthz?strict answers 503 when the oldest unfinished run is older than this (seconds).
POTAFLOW_HEALTH_MAX_RUN_AGE_SECONDS = env.int("POTAFLOW_HEALTH_MAX_RUN_AGE_SECONDS", default=1800)

# ---------------------------------------------------------------------------
# Logging: one stream for all three processes, JSON lines in production
# (core.structured_logging: run_id, step, attempt... on engine lines)
# ---------------------------------------------------------------------------
LOG_FORMAT = env("LOG_FORMAT", default="plain" if DEBUG else "json").strip().lower()
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} is not json or plain.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"()": "core.structured_logging.PlainFormatter"},
        "json": {"()": "core.structured_logging.JsonFormatter"},
    },
    "filters": {
        # Webhook tokens and secret query values are masked in every line.
        "redact": {"()": "core.redaction.RedactingFilter"},
        "context": {"()": "core.structured_logging.ContextFilter"},
        # Beat's periodic housekeeping says nothing at idle (core/log_filters.py).
        "housekeeping": {"()": "core.log_filters.HousekeepingFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["housekeeping", "context", "redact"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django.request": {"filters": ["redact"]},
        "django.server": {"filters": ["redact"]},
    },
}
