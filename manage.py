#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.conf import settings
    from django.core.management import execute_from_command_line

    from project.errors import exit_on_bad_config

    # Django would keep a settings error for later and show another one instead.
    exit_on_bad_config(lambda: settings.INSTALLED_APPS)
    # Bad library options (read as apps load) and a database that cannot be
    # used are one line too.
    exit_on_bad_config(lambda: execute_from_command_line(sys.argv))


if __name__ == "__main__":
    main()
