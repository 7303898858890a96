"""The file storage under test, local disk and S3, for the test process and the worker alike.

- ``s3_server``: a moto S3 server on 127.0.0.1 (``integrations/files/tests/peer.py``),
  one per session, started only when a test asks for S3.
- ``storage_kind``: ``"local"`` then ``"s3"`` (module scope, so the tests of a
  module run grouped by storage and the session worker restarts once per switch).
- ``file_storage``: points this process's ``STORAGES["potaflow_files"]`` at the
  storage of ``storage_kind``, emptied; ``.env`` is what a worker needs to use
  the same one (add it to ``celery_worker_env``), ``.objects()`` what it holds.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from integrations.files.tests.peer import ACCESS_KEY, REGION, SECRET_KEY, S3Server

BUCKET = "potaflow-test"
PREFIX = "potaflow"


@dataclass
class StorageUnderTest:
    kind: str
    env: dict[str, str]
    folder: Path | None = None
    s3: S3Server | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def objects(self) -> dict[str, bytes]:
        """Key (relative to the storage's root) -> bytes, of everything stored."""
        if self.s3 is not None:
            return {key.removeprefix(f"{PREFIX}/"): data for key, data in self.s3.objects(BUCKET, f"{PREFIX}/").items()}
        assert self.folder is not None
        return {
            str(path.relative_to(self.folder)): path.read_bytes() for path in self.folder.rglob("*") if path.is_file()
        }

    def open_multipart_uploads(self) -> list[str]:
        return self.s3.open_multipart_uploads(BUCKET) if self.s3 is not None else []


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    server.create_bucket(BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["local", "s3"])
def storage_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def file_storage_env(request: pytest.FixtureRequest, storage_kind: str) -> dict[str, str]:
    """What a web or worker process needs to use the storage of ``storage_kind`` (stable per kind)."""
    # Imported here: this plugin loads before Django is set up (conftest's pytest_plugins).
    from testing.worker import test_var_dir

    if storage_kind == "s3":
        return request.getfixturevalue("s3_server").storage_env(BUCKET, PREFIX)
    return {"POTAFLOW_FILE_STORAGE": str(test_var_dir() / "files")}


@pytest.fixture
def file_storage(request: pytest.FixtureRequest, storage_kind: str, settings: Any) -> StorageUnderTest:
    # Imported here: this plugin loads before Django is set up (conftest's pytest_plugins).
    from potaflow.settings import file_storage_settings
    from testing.worker import test_var_dir

    if storage_kind == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        for key in server.objects(BUCKET):
            server.client().delete_object(Bucket=BUCKET, Key=key)
        client = server.client()
        for upload in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
            client.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
        env = server.storage_env(BUCKET, PREFIX)
        entry = file_storage_settings(
            env["POTAFLOW_FILE_STORAGE"],
            endpoint_url=server.url,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region_name=REGION,
        )
        under_test = StorageUnderTest("s3", env, s3=server)
    else:
        folder = test_var_dir() / "files"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        entry = file_storage_settings(str(folder))
        under_test = StorageUnderTest("local", {"POTAFLOW_FILE_STORAGE": str(folder)}, folder=folder)
    settings.STORAGES = {**settings.STORAGES, "potaflow_files": entry}
    return under_test
