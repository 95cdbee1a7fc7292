"""``python manage.py rundemo``: migrate, load the demo data, serve the site at 127.0.0.1:8000."""

from __future__ import annotations

import os
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV

DEFAULT_ADDRPORT = "127.0.0.1:8000"


class Command(BaseCommand):
    help = (
        "Run the example project with demo data: migrate --noinput, usage_limits_demo, "
        f"then runserver (on {DEFAULT_ADDRPORT} unless an address is given)."
    )
    requires_system_checks = []  # runserver runs them

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "addrport", nargs="?", default=DEFAULT_ADDRPORT, help="Optional ip:port or port."
        )
        parser.add_argument(
            "--noreload",
            action="store_false",
            dest="use_reloader",
            help="Do not restart the server when code changes.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # The autoreloader runs this command again in a child process (with RUN_MAIN set): the
        # database is ready by then, so only the first process migrates and loads the demo.
        if os.environ.get(DJANGO_AUTORELOAD_ENV) != "true":
            call_command("migrate", interactive=False, verbosity=options["verbosity"])
            call_command("usage_limits_demo")
            self.stdout.write(
                f"\nOpen http://{_display(options['addrport'])}/ and sign in as free, starter or "
                "pro (password = username), or as admin/admin for the admin.\n"
            )
        call_command("runserver", options["addrport"], use_reloader=options["use_reloader"])


def _display(addrport: str) -> str:
    return f"127.0.0.1:{addrport}" if addrport.isdigit() else addrport
