"""A local S3-compatible server: moto in server mode (real HTTP on 127.0.0.1, S3's REST API).

boto3 (through django-storages) talks to it exactly as to AWS: signed
requests, multipart uploads, listings. Its state lives in this process; the
worker subprocess reaches it over HTTP like any peer.
"""

from __future__ import annotations

from typing import Any

from testing.http_server import free_port

ACCESS_KEY = "AKIATESTPOTAFLOW"
SECRET_KEY = "test-secret-key-potaflow"  # noqa: S105 - a local test server's key
REGION = "us-east-1"


class S3Server:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer  # deferred: moto (and Flask) load only when S3 is tested

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def client(self) -> Any:
        import boto3  # deferred: only the tests that use S3 load it

        return boto3.client(
            "s3", endpoint_url=self.url, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )  # fmt: skip

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under ``prefix``: key -> bytes."""
        client = self.client()
        found: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found

    def open_multipart_uploads(self, bucket: str) -> list[str]:
        return [u["Key"] for u in self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]

    def storage_env(self, bucket: str, prefix: str = "potaflow") -> dict[str, str]:
        """What a PotaFlow process needs to keep its files in ``bucket`` here."""
        return {
            "POTAFLOW_FILE_STORAGE": f"s3://{bucket}/{prefix}",
            "AWS_S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_S3_REGION_NAME": REGION,
        }
