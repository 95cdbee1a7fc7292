"""Regenerate the README's screenshot of the usage dashboard (``docs/images/dashboard.png``).

    python docs/screenshots.py            # needs Chromium (apt-get install chromium) and playwright

It builds the example project's demo data in a throwaway SQLite database, serves the site on a
free local port, signs in as the Starter demo user (meters at about 70 %: amber, with the upgrade
call to action) and photographs ``/usage/`` in Debian's Chromium. ``--width`` and ``--dark``
make other variants; ``--out`` writes elsewhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "images" / "dashboard.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--user", default="starter", help="free, starter or pro")
    parser.add_argument("--dark", action="store_true")
    args = parser.parse_args()

    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1

    workdir = Path(tempfile.mkdtemp(prefix="usage-limits-screenshots-"))
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'example.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
    os.environ["DEBUG"] = "false"
    sys.path.insert(0, str(REPO))

    import django

    django.setup()
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.management import call_command
    from django.test.testcases import LiveServerThread
    from playwright.sync_api import sync_playwright

    call_command("migrate", verbosity=0)
    call_command("usage_limits_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115

    server = LiveServerThread("127.0.0.1", StaticFilesHandler, port=0)
    server.daemon = True
    server.start()
    server.is_ready.wait()
    if server.error:
        raise server.error
    site = f"http://127.0.0.1:{server.port}"
    try:
        # Playwright's sync API runs an event loop in this thread; the server runs in its own.
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, headless=True, args=CHROMIUM_ARGS
            )
            context = browser.new_context(
                viewport={"width": args.width, "height": 800},
                device_scale_factor=1,
                color_scheme="dark" if args.dark else "light",
            )
            page = context.new_page()
            page.goto(f"{site}/login/")
            page.fill("#id_username", args.user)
            page.fill("#id_password", args.user)
            page.click("button[type=submit]")
            page.wait_for_url(f"{site}/")
            page.goto(f"{site}/usage/")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        server.terminate()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
