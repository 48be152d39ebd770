"""LotoOps settings: one file, read from environment variables.

Every variable is listed in `.env.example`. With none set, the site runs in the
embedded default: SQLite under `var/`, Celery on an atomic filesystem transport,
no Redis (SSE streams poll the database).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("LOTOOPS_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_float(name: str, default: float) -> float:
    value = env_str(name)
    return float(value) if value else default


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG and env_bool("LOTOOPS_REQUIRE_SECRET_KEY", False):
        raise RuntimeError("SECRET_KEY must be set in production")
    # Embedded default: a per-checkout key kept out of git under var/.
    _key_file = VAR_DIR / "secret_key"
    if _key_file.exists():
        SECRET_KEY = _key_file.read_text().strip()
    else:
        SECRET_KEY = secrets.token_urlsafe(50)
        try:
            VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created 0600, never readable by others even for an instant.
            with os.fdopen(os.open(_key_file, os.O_CREAT | os.O_WRONLY, 0o600), "w") as key:
                key.write(SECRET_KEY)
        except OSError:
            pass

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "guardian",
    "django_celery_beat",
    "ninja",
    "axes",
    "incidents",
    "diagnostics",
    "alerts",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Everything past the static files: Cache-Control: no-store, private.
    "lotoops.middleware.NoStoreMiddleware",
    # The API, the alert receivers and /metrics: 429 past BAD_TOKEN_LIMIT bad tokens.
    "lotoops.middleware.BadTokenThrottleMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before the login check: a session past its age or idle limit is logged out here.
    "lotoops.middleware.SessionTimeoutMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # Times in the viewer's chosen zone (profile page), else TIME_ZONE.
    "lotoops.middleware.ViewerTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: answers a locked-out login (site and admin) with 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "lotoops.urls"
WSGI_APPLICATION = "lotoops.wsgi.application"
ASGI_APPLICATION = "lotoops.asgi.application"

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
                "django.template.context_processors.csp",
            ],
        },
    },
]

# Each process's pool: at most this many PostgreSQL connections, and the web process
# serves at most this many requests at once (lotoops/inflight.py).
DATABASE_POOL_SIZE = int(env_float("DATABASE_POOL_SIZE", 10))
DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'lotoops.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web server, worker and beat write concurrently: WAL, a busy timeout, and
    # IMMEDIATE transactions so a writer waits instead of failing on upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)
    # A connection that died with its server (a PostgreSQL restart, a failover, an
    # idle timeout) is noticed before it is used: with the pool, Django has psycopg's
    # pool check each connection as it hands it out (one empty round trip) and replace
    # a dead one; without it, Django checks its persistent connection at request start.
    # Either way no request fails on a stale connection.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if env_bool("DATABASE_POOL", True):
        from psycopg_pool.base import AttemptWithBackoff

        # While the server cannot be reached, psycopg's pool tries to connect again
        # after 1 s, then 2, 4, 8 … : after an outage of half a minute, every request
        # would wait for the next try and answer 503 for as long again. Every second
        # instead (a refused connect costs nothing), so pages are back within one.
        AttemptWithBackoff.DELAY_BACKOFF = 1.0
        # Under ASGI, Django's persistent connections are off: a pool keeps a few
        # connections open instead of connecting on every request (~3.5 ms here).
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": 1,
            "max_size": DATABASE_POOL_SIZE,
            # How long a request waits for a connection. Requests in flight are capped
            # at the pool's size (lotoops/inflight.py), so this wait only runs out when
            # the server cannot be reached: then the page is a 503 within that time.
            "timeout": env_float("DATABASE_POOL_TIMEOUT", 5.0),
        }
    if env_bool("DATABASE_PGBOUNCER", False):
        # PgBouncer in transaction mode: a transaction may run on any server
        # connection, so nothing may outlive one. No server-side cursors (.iterator()
        # would open one that the next transaction cannot see), no prepared
        # statements (psycopg prepares none with prepare_threshold None, Django's
        # default, pinned here), and beat's advisory lock needs DATABASE_SESSION_URL.
        DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
        DATABASES["default"]["OPTIONS"]["prepare_threshold"] = None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Requests Django serves at once per web process (more wait, up to WEB_QUEUE_WAIT
# seconds, then get a 503 with Retry-After): what the pool can serve.
WEB_MAX_INFLIGHT = int(env_float("WEB_MAX_INFLIGHT", DATABASE_POOL_SIZE))
WEB_QUEUE_WAIT = env_float("WEB_QUEUE_WAIT", 5.0)

AUTHENTICATION_BACKENDS = [
    # First: refuses every login attempt (right password included) while locked out.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user, every page needs login
GUARDIAN_RENDER_403 = False

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "incidents:dashboard"
LOGOUT_REDIRECT_URL = "login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Login throttling (django-axes, site and admin login alike): after
# AXES_FAILURE_LIMIT wrong passwords for one username from one address, every
# attempt (the right password included) is refused with 429 until the cool-off
# ends; a successful login resets the count. Guesses against one username lock only
# that username from that address: behind a proxy that is not trusted, all clients
# share its address, and one user's lock is still not everyone's.
AXES_FAILURE_LIMIT = int(env_float("AXES_FAILURE_LIMIT", 5))
AXES_COOLOFF_TIME = timedelta(minutes=env_float("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# The address is the connection's (REMOTE_ADDR), which uvicorn takes from
# X-Forwarded-For only when the connection comes from FORWARDED_ALLOW_IPS (the run
# command trusts no address by default; never `*`, or clients pick their address).
if "*" in env_list("FORWARDED_ALLOW_IPS"):
    raise ImproperlyConfigured("FORWARDED_ALLOW_IPS must name the proxy's addresses, never *")
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT") or VAR_DIR / "staticfiles")
# WhiteNoise serves static files from the app itself (the embedded default has no
# proxy); finders let tests and a fresh checkout work before collectstatic.
WHITENOISE_USE_FINDERS = True
# WhiteNoise warns on every start while the folder does not exist yet.
with contextlib.suppress(OSError):
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Sessions end SESSION_MAX_AGE seconds after sign-in, or SESSION_IDLE_TIMEOUT seconds
# after the person's last request (live streams and polls are not requests of theirs:
# an open page does not keep a session alive); the next request goes to the login
# page and open live streams end (lotoops/middleware.py, incidents/rules/sessions.py).
SESSION_MAX_AGE = env_float("SESSION_MAX_AGE", 12 * 3600.0)
SESSION_IDLE_TIMEOUT = env_float("SESSION_IDLE_TIMEOUT", 3600.0)
SESSION_COOKIE_AGE = int(SESSION_MAX_AGE)
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HTTPS only: redirect plain HTTP (not /healthz, which load balancers probe
# directly) and tell browsers to come back over HTTPS for SECURE_HSTS_SECONDS.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = int(env_float("SECURE_HSTS_SECONDS", 0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)

from django.utils.csp import CSP  # noqa: E402

# No inline script or style anywhere: htmx is vendored and configured by <meta>.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
    # No <base> may redirect relative URLs, no plugins (<object>, <embed>).
    "base-uri": [CSP.NONE],
    "object-src": [CSP.NONE],
}

# Redis: cache, Celery broker and the wake-up channel of the SSE streams.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            # One client per process (Django's own opens a pool per request under ASGI).
            "BACKEND": "lotoops.cache.SharedRedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "socket_connect_timeout": 2,
                "socket_timeout": 2,
                "client_name": f"{env_str('SSE_CHANNEL_PREFIX', 'lotoops')}:cache",
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Celery. Embedded default: kombu's filesystem transport made atomic (lotoops/broker.py),
# no server needed.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "lotoopsfs://"
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith(("filesystem://", "lotoopsfs://")):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "polling_interval": 0.1,
    }
    # Made here, not only by `cli.py run`: a fresh clone's first process (a test run, a
    # worker started by hand) finds the queue where the broker and /healthz expect it.
    for _folder in ("queue", "control"):
        # A read-only checkout: /healthz says "queue folder missing".
        with contextlib.suppress(OSError):
            (_broker_dir / _folder).mkdir(mode=0o700, parents=True, exist_ok=True)
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 5}
# Queues by class (diagnostics/queues.py): paging never waits behind checks.
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_DEFAULT_QUEUE") or "celery"
CELERY_TASK_ROUTES = ("diagnostics.queues.route",)
CELERY_BROKER_CONNECTION_TIMEOUT = 5
# A broker that is down must not hold a web request: one quick retry, then the
# caller records the run as unsent (the reaper sends it when the broker is back).
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fix-up closes every database connection before and after each task
# and, in a prefork pool process, the whole psycopg pool with them: every check run
# opened a new PostgreSQL connection (a backend forked, ~5 ms of the server's CPU and
# the client's). Past this many tasks it still does; between them lotoops/celery.py
# hands the connection back to the process's pool, as a request does (and the pool
# checks it before the next task uses it). Inherited pools are still closed after fork.
CELERY_DB_REUSE_MAX = int(env_float("CELERY_DB_REUSE_MAX", 10_000))
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TIMEZONE = TIME_ZONE
# Money at risk on payment and banca incidents (diagnostics/impact.py): every
# MONEY_AT_RISK_INTERVAL s while such an incident is open, beat runs the runbook
# step MONEY_AT_RISK_STEP (its params hold the windows: the runbook's hour and a
# shorter one) and stores a sample. A rise of MONEY_AT_RISK_RISE_FACTOR times within
# MONEY_AT_RISK_RISE_WINDOW s (from MONEY_AT_RISK_RISE_MIN_PLAYS plays) suggests
# raising the severity on the page; it never changes it.
MONEY_AT_RISK_STEP = env_str("MONEY_AT_RISK_STEP", "pay.money_at_risk")
MONEY_AT_RISK_CATEGORIES = env_list("MONEY_AT_RISK_CATEGORIES", "payment,banca")
MONEY_AT_RISK_INTERVAL = env_float("MONEY_AT_RISK_INTERVAL", 60.0)
MONEY_AT_RISK_RISE_FACTOR = env_str("MONEY_AT_RISK_RISE_FACTOR", "2")
MONEY_AT_RISK_RISE_WINDOW = env_float("MONEY_AT_RISK_RISE_WINDOW", 600.0)
MONEY_AT_RISK_RISE_MIN_PLAYS = int(env_float("MONEY_AT_RISK_RISE_MIN_PLAYS", 5))
# Regulatory clocks (incidents/paging/regulatory.py): the flag, what must be done,
# within how many hours of the flag being set, and how many hours before the
# deadline Legal/Compliance is reminded. Escalated past the deadline every
# ESCALATION_INTERVAL, at most ESCALATION_MAX_STEPS times, until recorded as done.
REGULATORY_CLOCKS = {
    "data_breach": (
        env_str("REGULATORY_DATA_BREACH_TEXT", "Notify the data-protection authority"),
        env_float("REGULATORY_DATA_BREACH_HOURS", 72.0),
        env_float("REGULATORY_DATA_BREACH_WARN_HOURS", 24.0),
    ),
    "regulatory": (
        env_str("REGULATORY_REGULATORY_TEXT", "Notify the gaming regulator"),
        env_float("REGULATORY_REGULATORY_HOURS", 72.0),
        env_float("REGULATORY_REGULATORY_WARN_HOURS", 24.0),
    ),
}
# django_celery_beat's DatabaseScheduler behind a lock: one beat at a time.
CELERY_BEAT_SCHEDULER = "lotoops.beatlock:LockedDatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    "worker-heartbeat": {"task": "diagnostics.tasks.heartbeat", "schedule": 15.0},
    "reap-stale-check-runs": {"task": "diagnostics.tasks.reap_stale_runs", "schedule": 15.0},
    "expire-action-approvals": {"task": "diagnostics.tasks.expire_approvals", "schedule": 60.0},
    "escalate-due": {
        "task": "incidents.paging.tasks.escalate_due",
        "schedule": env_float("ESCALATION_CHECK_INTERVAL", 30.0),
    },
    "post-incident-reminders": {
        "task": "incidents.postincident.tasks.send_checklist_reminders",
        "schedule": 60.0,
    },
    "stripe-summaries": {"task": "alerts.tasks.summarize_stripe_due", "schedule": 60.0},
    "stripe-webhook-errors": {
        "task": "alerts.tasks.sweep_stripe_webhook_errors",
        "schedule": env_float("STRIPE_WEBHOOK_SWEEP", 60.0),
    },
    "sample-money-at-risk": {
        "task": "diagnostics.tasks.sample_money_at_risk",
        "schedule": MONEY_AT_RISK_INTERVAL,
    },
    # Verified recovery: starts a second round that is due (safety net for its
    # countdown task) and re-runs the recovery checks of recently resolved incidents.
    "recovery-sweep": {
        "task": "diagnostics.tasks.recovery_sweep",
        "schedule": env_float("RECOVERY_SWEEP_INTERVAL", 30.0),
    },
}
# A running check whose worker sent no sign of life for its step's timeout plus
# this grace (seconds) is retried (diagnostics) or failed (actions); a run queued
# for longer than CHECK_RUN_REQUEUE_AFTER is sent to the broker again.
CHECK_RUN_GRACE = env_float("CHECK_RUN_GRACE", 30.0)
CHECK_RUN_REQUEUE_AFTER = env_float("CHECK_RUN_REQUEUE_AFTER", 300.0)
# Verified recovery ("Mark resolved" on an incident whose procedure names recovery
# checks): the checks must pass twice, RECOVERY_INTERVAL seconds apart; after the
# resolution they are re-run every RECOVERY_WATCH_EVERY seconds for RECOVERY_WATCH
# seconds, and the first failure reopens the incident.
RECOVERY_INTERVAL = env_float("RECOVERY_INTERVAL", 120.0)
RECOVERY_WATCH = env_float("RECOVERY_WATCH", 24 * 3600.0)
RECOVERY_WATCH_EVERY = env_float("RECOVERY_WATCH_EVERY", 600.0)
# Approvals: actions on incidents of these severities (and steps marked
# requires_approval) queue only once a second person with the approve permission
# approves; a request not decided within ACTION_APPROVAL_MAX_AGE seconds expires.
# The severity counted is every one the incident held since it was declared (its
# timeline), so lowering it never skips the second person; with
# ACTION_APPROVAL_SEVERITY_WINDOW > 0 (seconds), one left longer ago than that no
# longer counts. 0, the default and the strictest, is "since declaration".
ACTION_APPROVAL_SEVERITIES = env_list("ACTION_APPROVAL_SEVERITIES", "P0,P1")
ACTION_APPROVAL_MAX_AGE = env_float("ACTION_APPROVAL_MAX_AGE", 1800.0)
ACTION_APPROVAL_SEVERITY_WINDOW = env_float("ACTION_APPROVAL_SEVERITY_WINDOW", 0.0)
# The environment variables a target may name as its secret: those starting with
# this prefix, or listed. Django's and the notification channels' own secrets are
# refused whatever these say (diagnostics.models.FORBIDDEN_SECRET_ENV).
TARGET_SECRET_ENV_PREFIX = env_str("TARGET_SECRET_ENV_PREFIX", "LOTOOPS_TARGET_")
TARGET_SECRET_ENV_ALLOW = env_list("TARGET_SECRET_ENV_ALLOW")
# Targets may not point at link-local (cloud metadata), loopback, private, shared or
# reserved addresses, IPv4 or IPv6, unless one of these networks (CIDR, comma-
# separated) holds the address: list the platform's own networks, e.g.
# 10.0.0.0/8 in a cluster, 127.0.0.0/8,::1/128 for servers on this machine.
TARGET_ALLOWED_NETWORKS = env_list("TARGET_ALLOWED_NETWORKS")
for _network in TARGET_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"TARGET_ALLOWED_NETWORKS: {_network!r} is not a network (e.g. 10.0.0.0/8, fd00::/8)"
        ) from None
# The only folder a Kubernetes target's `kubeconfig` option may name a file in
# (symbolic links resolved; a kubeconfig whose user runs a command, `exec:` or
# `auth-provider:`, is refused).
KUBECONFIG_DIR = Path(env_str("KUBECONFIG_DIR") or VAR_DIR / "kubeconfig")
# Evidence files (database dumps, log exports) stored on incidents, with their
# SHA-256: directories 0700, files 0600. Keep it on persistent, backed-up storage.
EVIDENCE_ROOT = Path(env_str("EVIDENCE_DIR") or VAR_DIR / "evidence")
# The PDF exports' font for Chinese, Japanese and Korean (Debian's fonts-noto-cjk).
PDF_CJK_FONT = env_str("PDF_CJK_FONT", "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
# A worker is reported up in /healthz while its last heartbeat is this recent.
WORKER_HEARTBEAT_MAX_AGE = env_float("WORKER_HEARTBEAT_MAX_AGE", 60.0)
# /metrics for Prometheus: off unless a bearer token is set.
METRICS_TOKEN = env_str("METRICS_TOKEN")
# Bad bearer tokens (the API, the alert receivers, /metrics): past this many from one
# client address within BAD_TOKEN_WINDOW seconds, the refusals are 429s with
# Retry-After (a good token from that address still works).
BAD_TOKEN_LIMIT = int(env_float("BAD_TOKEN_LIMIT", 10))
BAD_TOKEN_WINDOW = env_float("BAD_TOKEN_WINDOW", 60.0)

# SSE: how often a stream polls the database when no Redis wakes it up, and
# how often it sends a keep-alive comment.
SSE_POLL_INTERVAL = env_float("SSE_POLL_INTERVAL", 0.25)
SSE_KEEPALIVE = env_float("SSE_KEEPALIVE", 15.0)
SSE_MAX_DURATION = env_float("SSE_MAX_DURATION", 300.0)
# With Redis, the process's one subscription is backed by a poll this often (a lost
# message costs at most this delay); open streams' access is re-checked this often.
SSE_SAFETY_POLL = env_float("SSE_SAFETY_POLL", 5.0)
SSE_ACCESS_RECHECK = env_float("SSE_ACCESS_RECHECK", 3.0)
# Prefix of the Redis channels (and client names) of the live timeline: Redis pub/sub
# channels are shared by every database number of a server.
SSE_CHANNEL_PREFIX = env_str("SSE_CHANNEL_PREFIX", "lotoops")
# Open dashboards redraw their list when an incident changes: at most this many list
# fetches a second from the dashboards open on one web process (with more dashboards
# open, each waits longer between redraws, spread at random, up to the list's own
# 20 s poll), so an alert storm with a hundred dashboards open cannot crowd out the
# incident pages.
DASHBOARD_LIVE_FETCHES = env_float("DASHBOARD_LIVE_FETCHES", 10.0)
TIMELINE_PAGE_SIZE = 50


def served_url() -> str:
    """The address the run command serves (HOST and PORT, as lotoops/embedded.py
    reads them): links in pages and notifications point there unless SITE_URL says."""
    host = env_str("HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # noqa: S104 (listening everywhere: link to loopback)
        host = "127.0.0.1"
    port = env_str("PORT") or "8000"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


# Escalation and notifications. Links in messages start with SITE_URL.
SITE_URL = env_str("SITE_URL") or served_url()
# An unacknowledged incident escalates again every severity response time, at
# most this many seconds apart, and at most ESCALATION_MAX_STEPS times.
ESCALATION_INTERVAL = env_float("ESCALATION_INTERVAL", 900.0)
ESCALATION_MAX_STEPS = int(env_float("ESCALATION_MAX_STEPS", 8))
# Acknowledge links in notifications expire after this many seconds.
ACK_LINK_MAX_AGE = int(env_float("ACK_LINK_MAX_AGE", 24 * 3600))
# Timeout (s) of every call to Slack or the webhook; a send claimed longer ago than
# the lease is taken as lost and sent again; pending rows older than
# NOTIFY_REQUEUE_AFTER go to the broker again.
NOTIFY_TIMEOUT = env_float("NOTIFY_TIMEOUT", 10.0)
NOTIFY_SEND_LEASE = env_float("NOTIFY_SEND_LEASE", 120.0)
NOTIFY_REQUEUE_AFTER = env_float("NOTIFY_REQUEUE_AFTER", 30.0)
SLACK_BOT_TOKEN = env_str("SLACK_BOT_TOKEN")
SLACK_API_URL = env_str("SLACK_API_URL") or "https://slack.com/api"
SLACK_WEBHOOK_URL = env_str("SLACK_WEBHOOK_URL")
NOTIFY_WEBHOOK_URL = env_str("NOTIFY_WEBHOOK_URL")
NOTIFY_WEBHOOK_SECRET = env_str("NOTIFY_WEBHOOK_SECRET")
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_BACKEND = env_str("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = int(env_float("EMAIL_PORT", 25))
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL") or "LotoOps <lotoops@localhost>"

# LOG_FORMAT=json: one JSON object per line, with the incident and check run the
# line is about (incidents/logcontext.py); plain text otherwise.
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json")

# Stripe webhooks in (/hooks/stripe/): the endpoint's signing secret (whsec_…); failures
# join open payment incidents; STRIPE_DECLARE_THRESHOLD failures within
# STRIPE_DECLARE_WINDOW seconds declare one when none is open (0: never).
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
STRIPE_DECLARE_THRESHOLD = int(env_float("STRIPE_DECLARE_THRESHOLD", 0))
STRIPE_DECLARE_WINDOW = env_float("STRIPE_DECLARE_WINDOW", 300.0)
# Webhook endpoint errors: every STRIPE_WEBHOOK_SWEEP seconds (the beat), the events of
# the last STRIPE_WEBHOOK_SWEEP_MINUTES that Stripe did not deliver to every endpoint,
# listed through the Stripe target (alerts/payments.py).
STRIPE_WEBHOOK_SWEEP_MINUTES = int(env_float("STRIPE_WEBHOOK_SWEEP_MINUTES", 10))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "incidents.logcontext.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(incident)s %(check_run)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # axes: lockouts (WARNING) only, not every failed or successful login.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}
