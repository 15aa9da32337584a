#!/usr/bin/env python
"""Python side of the interoperability tests: drives the real
django-background-tasks 1.2.8 on the database named by BGTASKS_DJANGO_DATABASE
(sqlite:///ABSOLUTE/PATH, postgres://user@host:port/name or
mysql://user@host:port/name).

Every command prints one JSON document on stdout; logs and Django's own output
go to stderr. On error it prints "interop.py: error: ..." on stderr and exits
non-zero (1; 2 for bad usage). Datetimes are the ORM's aware datetimes in
isoformat() (e.g. "2026-11-27T20:48:16.210221+00:00"; isoformat drops
".ffffff" when the microseconds are 0).

Run it with the venv's interpreter, e.g.
  target/django-venv/bin/python tests/django/interop.py tasks

Note: this file shares its name with the app package interop/ beside it;
`import interop` finds the package (a directory package wins over a module of
the same name on one sys.path entry).
"""
import argparse
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

# Keep __pycache__ out of the source tree (the repo does not ignore it).
sys.dont_write_bytecode = True

HERE = Path(__file__).resolve().parent
MANAGE_PY = HERE / "manage.py"


def setup_django():
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "interop_project.settings")
    import django

    django.setup()
    # What process_tasks does first: import every app's tasks module so the
    # interop.* proxies are registered.
    from background_task.tasks import autodiscover

    autodiscover()


def jsonable(value):
    return value.isoformat() if isinstance(value, datetime) else value


def creator_info(obj):
    """The generic FK as the admin's change form and str() show it."""
    if obj.creator_content_type_id is None:
        return None
    ct = obj.creator_content_type
    creator = obj.creator  # None when the object no longer exists
    return {
        "content_type": {"id": ct.id, "app_label": ct.app_label, "model": ct.model, "str": str(ct)},
        "object_id": obj.creator_object_id,
        "str": None if creator is None else str(creator),
    }


def row(obj):
    """All 17 columns (by column name, in model order), plus what the model's
    helpers compute under "display"."""
    out = {f.attname: jsonable(getattr(obj, f.attname)) for f in obj._meta.concrete_fields}
    out["display"] = {
        "str": str(obj),
        "has_error": obj.has_error(),
        "locked_by_pid_running": obj.locked_by_pid_running(),
        "creator": creator_info(obj),
    }
    return out


def parse_json(text, what, kind):
    try:
        value = json.loads(text)
    except ValueError as e:
        raise SystemExit(f"interop.py: error: --{what} is not JSON: {e}")
    if not isinstance(value, kind):
        raise SystemExit(f"interop.py: error: --{what} must be a JSON {'array' if kind is list else 'object'}")
    return value


def parse_when(text):
    """Integer seconds from now (as the library's schedule=int), or an aware
    ISO 8601 datetime."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither integer seconds nor an ISO 8601 datetime")
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (USE_TZ=True needs aware datetimes)")
    return when


def parse_datetime(text):
    when = parse_when(text)
    if isinstance(when, int):
        raise argparse.ArgumentTypeError(f"{text!r}: expected an ISO 8601 datetime")
    return when


def cmd_migrate(args):
    """Runs Django's migrations: creates background_task, background_task_completedtask
    (Django's own schema, with the django_content_type foreign keys), the
    contenttypes/auth tables and interop_order."""
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.recorder import MigrationRecorder

    call_command("migrate", interactive=False, verbosity=1, stdout=sys.stderr, fake_initial=args.fake_initial)
    applied = MigrationRecorder(connection).applied_migrations()
    return {"vendor": connection.vendor, "applied": sorted(f"{app}.{name}" for app, name in applied)}


def cmd_enqueue(args):
    """Enqueues a task the Django way, by calling its @background proxy, and
    prints the stored Task row (re-read from the database), or null when the
    library created nothing (RESCHEDULE_EXISTING/CHECK_EXISTING)."""
    from background_task.models import Task
    from background_task.tasks import TaskSchedule, tasks

    proxy = tasks._tasks.get(args.name)
    if proxy is None:
        raise SystemExit(f"interop.py: error: no task registered as {args.name!r} (known: {sorted(tasks._tasks)})")
    task_args = parse_json(args.args, "args", list)
    call_kwargs = dict(parse_json(args.kwargs, "kwargs", dict))
    options = {
        "priority": args.priority,
        "queue": args.queue,
        "verbose_name": args.verbose_name,
        "repeat": args.repeat,
        "repeat_until": args.repeat_until,
        "remove_existing_tasks": True if args.remove_existing_tasks else None,
    }
    if args.action:
        action = {
            "schedule": TaskSchedule.SCHEDULE,
            "reschedule_existing": TaskSchedule.RESCHEDULE_EXISTING,
            "check_existing": TaskSchedule.CHECK_EXISTING,
        }[args.action]
        options["schedule"] = TaskSchedule(run_at=args.schedule, action=action)
    else:
        options["schedule"] = args.schedule
    if args.creator_order_id is not None:
        from interop.models import Order

        options["creator"], _ = Order.objects.get_or_create(pk=args.creator_order_id)
    for key, value in options.items():
        if value is None:
            continue  # not given: let the proxy apply its own default
        if key in call_kwargs:
            raise SystemExit(f"interop.py: error: --kwargs has {key!r}, which is also given as an option")
        call_kwargs[key] = value
    task = proxy(*task_args, **call_kwargs)
    return None if task is None else row(Task.objects.get(pk=task.pk))


def cmd_hash(args):
    """task_params and task_hash exactly as the library computes them
    (Task.objects.new_task, not saved)."""
    from background_task.models import Task

    task = Task.objects.new_task(
        args.name, parse_json(args.args, "args", list), parse_json(args.kwargs, "kwargs", dict)
    )
    return {"task_params": task.task_params, "task_hash": task.task_hash}


def cmd_tasks(args):
    """Every Task row (table background_task) through the ORM, by id."""
    from background_task.models import Task

    return [row(t) for t in Task.objects.order_by("id")]


def cmd_completed(args):
    """Every CompletedTask row (table background_task_completedtask) through the ORM, by id."""
    from background_task.models import CompletedTask

    return [row(t) for t in CompletedTask.objects.order_by("id")]


def cmd_create_order(args):
    """Creates (or finds) the Order with this id, a possible task creator, and
    prints its content type id, for rows that Rust enqueues with a creator."""
    from django.contrib.contenttypes.models import ContentType
    from interop.models import Order

    order, created = Order.objects.get_or_create(pk=args.id)
    return {"id": order.pk, "created": created, "content_type_id": ContentType.objects.get_for_model(Order).id}


def cmd_process(args):
    """Runs the real worker, `manage.py process_tasks --duration S --sleep 0.1`,
    in a child process (its locked_by is the child's pid, printed here).
    S must be >= 1: process_tasks takes 0 or less as "run forever"."""
    if args.duration < 1:
        raise SystemExit("interop.py: error: --duration must be >= 1 (process_tasks runs forever with 0)")
    cmd = [sys.executable, str(MANAGE_PY), "process_tasks", "--duration", str(args.duration), "--sleep", str(args.sleep)]
    if args.queue:
        cmd += ["--queue", args.queue]
    # Its stdout goes to our stderr: our stdout is kept for the JSON.
    child = subprocess.Popen(cmd, cwd=HERE, stdout=sys.stderr)
    returncode = child.wait()
    if returncode != 0:
        raise SystemExit(f"interop.py: error: {' '.join(cmd)} exited with {returncode}")
    return {"pid": child.pid, "returncode": returncode, "command": cmd[1:]}


def cmd_raw_datetimes(args):
    """The raw stored text of the datetime columns of both tables, read with a
    plain cursor (no ORM conversion). On SQLite that is the stored TEXT (and
    its typeof()); on PostgreSQL it is column::text in the session's time zone
    (Django sets UTC); on MySQL/MariaDB it is CAST(column AS CHAR) and the
    column's declared type (DATETIME has no time zone: Django stores UTC)."""
    import sqlite3
    from contextlib import closing

    from django.db import connection

    columns = ["run_at", "locked_at", "failed_at", "repeat_until"]
    if connection.vendor == "sqlite":
        # The stdlib module, not Django's connection: Django's registers
        # converters for columns declared "datetime", so even its plain cursor
        # would hand back datetime objects instead of the stored text.
        conn = sqlite3.connect(connection.settings_dict["NAME"], timeout=30)
        select = ", ".join(f"{c}, typeof({c})" for c in columns)
    elif connection.vendor == "postgresql":
        conn = connection
        select = ", ".join(f"{c}::text, pg_typeof({c})::text" for c in columns)
    elif connection.vendor == "mysql":
        conn = connection
        select = ", ".join(
            f"CAST({c} AS CHAR), (SELECT column_type FROM information_schema.columns"
            f" WHERE table_schema = DATABASE() AND table_name = '{{table}}' AND column_name = '{c}')"
            for c in columns
        )
    else:
        raise SystemExit(f"interop.py: error: raw-datetimes does not support {connection.vendor}")
    out = {"vendor": connection.vendor}
    with closing(conn.cursor()) as cursor:
        for table in ["background_task", "background_task_completedtask"]:
            cursor.execute(f"SELECT id, {select.replace('{table}', table)} FROM {table} ORDER BY id")
            rows = []
            for r in cursor.fetchall():
                item = {"id": r[0]}
                for i, c in enumerate(columns):
                    item[c] = r[1 + 2 * i]
                    item[f"{c}_type"] = r[2 + 2 * i]
                rows.append(item)
            out[table] = rows
    if conn is not connection:
        conn.close()
    return out


def cmd_admin_list(args):
    """What the Django admin's changelist shows for Task (or, with --completed,
    CompletedTask): background_task.admin's own ModelAdmin, its list_display,
    each cell computed like the changelist does (lookup_field, then
    display_for_field / display_for_value), rows in the changelist's default
    order (-pk). Text cells are the admin's text; boolean cells (has_error,
    locked_by_pid_running) are the value its icon shows: true, false or null."""
    from django.contrib import admin
    from django.contrib.admin.utils import display_for_field, display_for_value, label_for_field, lookup_field
    from background_task.models import CompletedTask, Task

    # background_task/admin.py registers on admin.site; django.contrib.admin is
    # not an installed app here, so give it a private site to register on.
    admin.site = admin.AdminSite(name="interop")
    import background_task.admin  # noqa: F401

    model = CompletedTask if args.completed else Task
    model_admin = admin.site._registry[model]
    empty = model_admin.get_empty_value_display()
    headers = [
        {"field": name, "label": str(label_for_field(name, model, model_admin))} for name in model_admin.list_display
    ]
    rows = []
    for obj in model._default_manager.order_by("-pk"):
        cells = {"pk": obj.pk}
        for name in model_admin.list_display:
            f, attr, value = lookup_field(name, obj, model_admin)
            if f is None or f.auto_created:
                if getattr(attr, "boolean", False):
                    cells[name] = value
                else:
                    cells[name] = str(display_for_value(value, empty))
            else:
                cells[name] = str(display_for_field(value, f, empty))
        rows.append(cells)
    return {
        "model": f"{model._meta.app_label}.{model.__name__}",
        "admin": type(model_admin).__name__,
        "headers": headers,
        "rows": rows,
    }


def build_parser():
    p = argparse.ArgumentParser(
        prog="interop.py",
        description="Drive the real django-background-tasks 1.2.8 on $BGTASKS_DJANGO_DATABASE; prints JSON.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, summary):
        sp = sub.add_parser(name, help=summary, description=func.__doc__)
        sp.set_defaults(func=func)
        return sp

    sp = add("migrate", cmd_migrate, "run Django's migrations (creates the tables)")
    sp.add_argument("--fake-initial", action="store_true",
                    help="as manage.py migrate --fake-initial: record 0001_initial when its tables exist")

    sp = add("enqueue", cmd_enqueue, "enqueue through the @background proxy; print the stored row")
    sp.add_argument("--name", required=True, help="registered task name, e.g. interop.record")
    sp.add_argument("--args", default="[]", help="JSON array of positional arguments")
    sp.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    sp.add_argument("--priority", type=int)
    sp.add_argument("--queue")
    sp.add_argument("--schedule", type=parse_when, help="seconds from now (int) or an aware ISO 8601 datetime")
    sp.add_argument("--verbose-name")
    sp.add_argument("--creator-order-id", type=int, help="creator = interop.Order with this id (created if needed)")
    sp.add_argument("--repeat", type=int, help="repeat period in seconds")
    sp.add_argument("--repeat-until", type=parse_datetime, help="aware ISO 8601 datetime")
    sp.add_argument("--action", choices=["schedule", "reschedule_existing", "check_existing"])
    sp.add_argument("--remove-existing-tasks", action="store_true")

    sp = add("hash", cmd_hash, "print the library's task_params and task_hash")
    sp.add_argument("--name", required=True)
    sp.add_argument("--args", default="[]", help="JSON array")
    sp.add_argument("--kwargs", default="{}", help="JSON object")

    add("tasks", cmd_tasks, "print every Task row")
    add("completed", cmd_completed, "print every CompletedTask row")

    sp = add("create-order", cmd_create_order, "create an interop.Order (a task creator)")
    sp.add_argument("--id", type=int, required=True)

    sp = add("process", cmd_process, "run manage.py process_tasks for S seconds")
    sp.add_argument("--duration", type=int, required=True, help="seconds (process_tasks --duration)")
    sp.add_argument("--sleep", type=float, default=0.1, help="idle poll interval (default 0.1)")
    sp.add_argument("--queue")

    add("raw-datetimes", cmd_raw_datetimes, "print the stored text of the datetime columns")

    sp = add("admin-list", cmd_admin_list, "print what the admin changelist shows")
    sp.add_argument("--completed", action="store_true", help="CompletedTask's changelist instead of Task's")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        setup_django()
        text = json.dumps(args.func(args), indent=2)
    except SystemExit:
        raise
    except Exception as e:  # one clear line; the traceback only with BGTASKS_DJANGO_TRACEBACK=1
        if os.environ.get("BGTASKS_DJANGO_TRACEBACK"):
            import traceback

            traceback.print_exc()
        print(f"interop.py: error: {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
