"""Settings of the interoperability test project: the real django-background-tasks
1.2.8 on the database named by the environment.

Environment:
  BGTASKS_DJANGO_DATABASE  (required) sqlite:///ABSOLUTE/PATH,
                           postgres://user[:password]@host[:port]/name
                           or mysql://user[:password]@host[:port]/name (MySQL/MariaDB)
  BGTASKS_DJANGO_RECORD    file that the interop.* tasks append to (interop/tasks.py)
  BGTASKS_DJANGO_MAX_ATTEMPTS, BGTASKS_DJANGO_MAX_RUN_TIME
                           optional overrides of MAX_ATTEMPTS (default 25) and
                           MAX_RUN_TIME (default 3600 s)
  BGTASKS_DJANGO_LOG_LEVEL log level of the stderr log handler (default WARNING)
  BGTASKS_DJANGO_USE_TZ    "false" for a project with USE_TZ = False (default true)
  BGTASKS_DJANGO_TIME_ZONE TIME_ZONE (default UTC); with USE_TZ = False every
                           timestamp is stored as this zone's naive wall clock
"""
import os
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured


def database_from_url(url):
    """Django DATABASES['default'] for a sqlite:///, postgres:// or mysql:// URL."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # sqlite:///ABSOLUTE/PATH -> netloc '' and path '/ABSOLUTE/PATH'
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise ImproperlyConfigured(
                f"BGTASKS_DJANGO_DATABASE={url!r}: a SQLite URL must be sqlite:///ABSOLUTE/PATH"
            )
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": unquote(parts.path),
            # Rust and Python share the file: wait for its lock instead of failing.
            "OPTIONS": {"timeout": 30},
        }
    if parts.scheme in ("postgres", "postgresql"):
        name = unquote(parts.path.lstrip("/"))
        if not name or not parts.hostname:
            raise ImproperlyConfigured(
                f"BGTASKS_DJANGO_DATABASE={url!r}: a PostgreSQL URL must be postgres://user@host:port/name"
            )
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname,
            "PORT": str(parts.port or ""),
        }
    if parts.scheme in ("mysql", "mariadb"):
        name = unquote(parts.path.lstrip("/"))
        if not name or not parts.hostname:
            raise ImproperlyConfigured(
                f"BGTASKS_DJANGO_DATABASE={url!r}: a MySQL URL must be mysql://user@host:port/name"
            )
        # PyMySQL (pure Python, pinned in requirements.txt) stands in for
        # mysqlclient, which needs a C compiler and the client headers.
        # Django 4.2 asks for mysqlclient >= 1.4.3; PyMySQL 1.1 reports 1.4.6.
        import pymysql

        pymysql.install_as_MySQLdb()
        return {
            "ENGINE": "django.db.backends.mysql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname,
            "PORT": str(parts.port or ""),
            # utf8mb4: task_params may hold any Unicode (Rust writes it so);
            # strict mode: Django's own recommendation (check mysql.W002).
            "OPTIONS": {"charset": "utf8mb4", "init_command": "SET sql_mode='STRICT_TRANS_TABLES'"},
        }
    raise ImproperlyConfigured(
        f"BGTASKS_DJANGO_DATABASE={url!r}: unsupported scheme {parts.scheme!r} "
        "(use sqlite:///, postgres:// or mysql://)"
    )


_DATABASE_URL = os.environ.get("BGTASKS_DJANGO_DATABASE")
if not _DATABASE_URL:
    raise ImproperlyConfigured(
        "BGTASKS_DJANGO_DATABASE is not set (sqlite:///ABSOLUTE/PATH, postgres://user@host:port/name "
        "or mysql://user@host:port/name)"
    )

DATABASES = {"default": database_from_url(_DATABASE_URL)}

SECRET_KEY = "interop-tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "background_task",
    # A plain module path, not an AppConfig path: background_task's
    # autodiscover() imports "<entry>.tasks" for each entry.
    "interop",
]

# background_task has no default_auto_field: keep its 32-bit AutoField (and
# silence models.W042).
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

USE_TZ = os.environ.get("BGTASKS_DJANGO_USE_TZ", "true").lower() != "false"
TIME_ZONE = os.environ.get("BGTASKS_DJANGO_TIME_ZONE", "UTC")
LANGUAGE_CODE = "en-us"

# django-background-tasks settings (the library reads these exact names).
if os.environ.get("BGTASKS_DJANGO_MAX_ATTEMPTS"):
    MAX_ATTEMPTS = int(os.environ["BGTASKS_DJANGO_MAX_ATTEMPTS"])
if os.environ.get("BGTASKS_DJANGO_MAX_RUN_TIME"):
    MAX_RUN_TIME = int(os.environ["BGTASKS_DJANGO_MAX_RUN_TIME"])
BACKGROUND_TASK_RUN_ASYNC = False

# Everything logs to stderr: stdout is kept for interop.py's JSON.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["stderr"], "level": os.environ.get("BGTASKS_DJANGO_LOG_LEVEL", "WARNING")},
}
