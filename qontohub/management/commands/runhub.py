"""Serve the hub and its django-q2 cluster together until Ctrl-C stops both.

``make run`` uses this so a newcomer gets the web server (with the provider sandboxes mounted)
and the workers from one command. Ctrl-C (SIGINT) or SIGTERM stops both children cleanly; if
either child dies, the other is stopped too and the exit status says so.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand
from django_q.tasks import async_task


class Command(BaseCommand):
    help = "Run the web server and a django-q2 cluster together (development)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        python = sys.executable
        children = [
            subprocess.Popen([python, "manage.py", "qcluster"]),
            subprocess.Popen(
                [python, "manage.py", "runserver", options["addrport"], "--noreload", "--skip-checks"]
            ),
        ]
        # A first heartbeat right away, so /healthz shows the workers alive without waiting for
        # the scheduler's first pass (it then beats every minute on its own).
        async_task("qontohub.tasks.heartbeat")
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        self.stdout.write(f"QontoHub on http://{options['addrport']}/ — Ctrl-C stops the server and workers.")
        exit_code = 0
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    self.stderr.write(f"{child.args[2]} exited with status {child.returncode}; stopping.")
                    exit_code = child.returncode or 1
                    stopping = True
            time.sleep(0.5)
        for child in children:
            if child.poll() is None:
                # SIGTERM: django-q2 finishes its running tasks and stops its workers on it, and
                # runserver exits at once (it may sit in its serve loop through a SIGINT).
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        self.stdout.write("Stopped.")
        sys.exit(exit_code)
