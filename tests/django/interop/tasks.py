"""The tasks the interoperability tests enqueue from either side.

Names are fixed with name=, so Rust can enqueue them by name. Every task first
appends one JSON line {"task": name, "args": [...], "kwargs": {...}} to the file
named by BGTASKS_DJANGO_RECORD, so a test can see what the Python function
received (one line per attempt).
"""
import json
import os

from background_task import background
from background_task.exceptions import InvalidTaskError


def _record(name, args, kwargs):
    path = os.environ.get("BGTASKS_DJANGO_RECORD")
    if not path:
        raise RuntimeError(f"{name}: BGTASKS_DJANGO_RECORD is not set, nowhere to record the call")
    line = json.dumps({"task": name, "args": list(args), "kwargs": kwargs}, sort_keys=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


@background(name="interop.record")
def record(*args, **kwargs):
    """Records its arguments and succeeds."""
    _record("interop.record", args, kwargs)


@background(name="interop.add")
def add(a, b):
    """Records its arguments and returns a + b (the library discards the result)."""
    _record("interop.add", (a, b), {})
    return a + b


@background(name="interop.fail")
def fail(*args, **kwargs):
    """Records its arguments, then raises: retried with backoff until MAX_ATTEMPTS."""
    _record("interop.fail", args, kwargs)
    raise RuntimeError("interop.fail always fails")


@background(name="interop.invalid")
def invalid(*args, **kwargs):
    """Records its arguments, then raises InvalidTaskError: failed at once, no retry."""
    _record("interop.invalid", args, kwargs)
    raise InvalidTaskError("interop.invalid is never valid")


@background(name="bgtasks.noop")
def noop():
    """The name of the bundled `bgtasks` binary's no-op task, so that Django
    can enqueue work the binary's runner runs."""
    _record("bgtasks.noop", (), {})
