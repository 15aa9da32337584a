#!/usr/bin/env python
"""Django's command-line utility for the interoperability test project.

Needs BGTASKS_DJANGO_DATABASE (see interop_project/settings.py), e.g.
  BGTASKS_DJANGO_DATABASE=sqlite:////tmp/x.sqlite3 python manage.py process_tasks
"""
import os
import sys

# Keep __pycache__ out of the source tree (the repo does not ignore it).
sys.dont_write_bytecode = True

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "interop_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
