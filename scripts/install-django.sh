#!/usr/bin/env bash
# Installs the real django-background-tasks (and the Django it runs on) into a
# virtualenv, for the Python side of the interoperability tests
# (tests/django/). The pins are in tests/django/requirements.txt.
#
# Venv: ${BGTASKS_DJANGO_VENV:-target/django-venv} (a relative path is taken
# from the repository root), made with ${BGTASKS_DJANGO_PYTHON:-python3}.
# Idempotent: when the venv already has exactly the pinned versions it only
# prints them.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUIREMENTS=tests/django/requirements.txt
VENV=${BGTASKS_DJANGO_VENV:-target/django-venv}
PYTHON=${BGTASKS_DJANGO_PYTHON:-python3}
VENV_PY="$VENV/bin/python"

die() {
  echo "FATAL: $*" >&2
  exit 1
}

[[ -f $REQUIREMENTS ]] || die "$REQUIREMENTS is missing."

# Exit 0 when every 'name==version' pin of the requirements file is installed
# in the venv at exactly that version; print what differs otherwise.
pins_satisfied() {
  "$VENV_PY" - "$REQUIREMENTS" <<'PY'
import sys
from importlib import metadata

bad = []
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    try:
        have = metadata.version(name.strip())
    except metadata.PackageNotFoundError:
        have = None
    if have != want.strip():
        bad.append(f"{name.strip()}: want {want.strip()}, have {have}")
if bad:
    print("venv differs from the pins: " + "; ".join(bad), file=sys.stderr)
    sys.exit(1)
PY
}

print_versions() {
  "$VENV_PY" - "$REQUIREMENTS" <<'PY'
import platform, sys
from importlib import metadata

print(f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})")
for line in open(sys.argv[1]):
    name = line.split("#", 1)[0].strip().partition("==")[0].strip()
    if name:
        print(f"{name}=={metadata.version(name)}")
PY
}

if [[ -x $VENV_PY ]] && pins_satisfied 2>/dev/null; then
  echo "django-background-tasks venv at $VENV is up to date:"
  print_versions
  exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; set BGTASKS_DJANGO_PYTHON to a Python 3.8-3.12 interpreter."
"$PYTHON" -c 'import sys; sys.exit(0 if (3, 8) <= sys.version_info[:2] <= (3, 12) else 1)' \
  || die "$("$PYTHON" --version 2>&1) is not supported by Django 4.2 / django-background-tasks 1.2.8 (need Python 3.8-3.12)."

if [[ ! -x $VENV_PY ]]; then
  echo "Creating the virtualenv $VENV with $("$PYTHON" --version 2>&1)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv $VENV' failed (is the venv/ensurepip module installed?)."
fi

echo "Installing $REQUIREMENTS into $VENV"
"$VENV_PY" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS" \
  || die "pip install -r $REQUIREMENTS failed; the Django interoperability tests cannot run."
"$VENV_PY" -m pip check || die "pip check found broken requirements in $VENV."
pins_satisfied || die "after the install, $VENV still does not match $REQUIREMENTS."

echo "Installed:"
print_versions
