"""Upload benchmark: a multipart webhook upload is streamed to the file storage in bounded memory.

Posts a ``--mb`` MiB file ``--repeat`` times through the webhook view
(in-process: Django's request handling, the real upload handler, the real
storage; PostgreSQL), and prints for each size the throughput and the peak
Python memory allocated while one upload is handled (``tracemalloc``) next to
the file's size: the point of streaming is that the second does not follow
the first. Local disk under a temporary folder by default; set
``POTAFLOW_FILE_STORAGE`` (and the AWS_* variables) for a bucket. Bounded:
at most 500 MiB per file, 20 repeats. Messages go to an in-memory broker
(nothing executes the runs). See bench/README.md.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/potaflow_bench_uploads \\
        .venv/bin/python bench/uploads.py --mb 10 100
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retention import BASE_DIR, ensure_fresh_database, mib  # noqa: E402 - the bench kit is a sibling script

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/potaflow_bench_uploads"
BOUNDARY = "potaflow-bench"


class MultipartBody:
    """A multipart body of one ``size``-byte file, produced in 1 MiB pieces (never whole in memory)."""

    def __init__(self, size: int) -> None:
        self.head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="upload"; filename="bench.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        self.size = size
        self.length = len(self.head) + size + len(self.tail)
        self.sent = -1
        self.piece = b"x" * (1024 * 1024)

    def read(self, n: int = -1) -> bytes:
        if self.sent < 0:
            self.sent = 0
            return self.head
        if self.sent < self.size:
            chunk = self.piece[: min(len(self.piece), self.size - self.sent, n if n > 0 else len(self.piece))]
            self.sent += len(chunk)
            return chunk
        if self.tail:
            tail, self.tail = self.tail, b""
            return tail
        return b""

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)  # the multipart parser reads by size; WSGI asks for the method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, nargs="+", default=[10, 100], help="file sizes in MiB [10 100]")
    parser.add_argument("--repeat", type=int, default=3, help="uploads per size [3]")
    args = parser.parse_args()
    sizes = [max(1, min(mb, 500)) for mb in args.mb]
    repeat = max(1, min(args.repeat, 20))
    db_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    ensure_fresh_database(db_url)
    folder = tempfile.mkdtemp(prefix="potaflow-bench-uploads-")
    os.environ.setdefault("POTAFLOW_FILE_STORAGE", folder)
    os.environ.update(
        {
            "DATABASE_URL": db_url,
            "CELERY_BROKER_URL": "memory://",
            "DJANGO_SETTINGS_MODULE": "potaflow.settings",
            "POTAFLOW_UPLOAD_MAX_BYTES": str(600 * 1024 * 1024),
            "POTAFLOW_UPLOAD_REQUEST_MAX_BYTES": str(601 * 1024 * 1024),
            "POTAFLOW_FILE_QUOTA_BYTES": "0",
            "POTAFLOW_WEBHOOK_RATE": "off",
            "LOG_LEVEL": "WARNING",
        }
    )
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command

    from accounts.models import User
    from accounts.services import organization_create
    from workflows.files import services as file_services
    from workflows.files import storage
    from workflows.models import RunFile, TriggerType
    from workflows.services import workflow_create

    call_command("migrate", verbosity=0, interactive=False)
    owner = User.objects.create_user(email="bench-uploads@example.com", password=None)
    organization = organization_create(name="bench uploads", owner=owner)
    workflow = workflow_create(organization=organization, name="bench: uploads", trigger_type=TriggerType.WEBHOOK)
    handler = WSGIHandler()
    print(f"storage: {storage.describe()}")
    print(f"{'file':>12} {'MiB/s':>8} {'peak Python memory per upload':>32}")
    for size_mb in [0, *sizes]:  # 0: one 64 KiB warm-up (first-request imports), not printed
        size = size_mb * 1024 * 1024 or 64 * 1024
        rates, peaks = [], []
        for _ in range(repeat if size_mb else 1):
            body = MultipartBody(size)
            environ = {
                "REQUEST_METHOD": "POST", "PATH_INFO": f"/hooks/{workflow.webhook_token}", "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": body, "wsgi.errors": sys.stderr,
                "CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}", "CONTENT_LENGTH": str(body.length),
                "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1",
            }  # fmt: skip
            statuses: list[str] = []
            tracemalloc.start()
            started = time.perf_counter()
            b"".join(handler(environ, lambda status, headers, *_, seen=statuses: seen.append(status)))
            elapsed = time.perf_counter() - started
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            if not statuses or not statuses[0].startswith("202"):
                sys.exit(f"upload answered {statuses}")
            rates.append(size / elapsed / 1024 / 1024)
        if size_mb:
            print(f"{mib(size):>12} {sorted(rates)[len(rates) // 2]:8.1f} {mib(max(peaks)):>32}")
    used, files = file_services.usage()
    file_services.delete_rows(list(RunFile.objects.all()))
    print(f"stored then deleted: {files} file(s), {mib(used).strip()}")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
