"""file.parse and file.store on local disk and S3 (a local moto server): formats, detection, bounds
named with their settings, tenants, paths that try to climb out."""

import hashlib
import json
import time

import pytest

from accounts.models import Organization
from integrations.errors import PermanentError
from integrations.files.action import ParseFile, StoreFile
from integrations.tests.support import file_ctx, stored_file
from workflows.models import RunFile

pytestmark = pytest.mark.django_db
parse, store = ParseFile(), StoreFile()


def parsed(organization, name, data, **config):
    ref = stored_file(organization, name, data)
    return parse.run({"file": ref, **config}, file_ctx(organization))


def test_csv_with_a_header_becomes_objects_and_semicolons_are_detected(file_storage, organization):
    out = parsed(organization, "orders.csv", b"id;name;amount\n1;Ada;3,50\n2;Grace;4\n")
    assert out["rows"] == [{"id": "1", "name": "Ada", "amount": "3,50"}, {"id": "2", "name": "Grace", "amount": "4"}]
    assert (out["delimiter"], out["header"], out["columns"], out["row_count"]) == (
        ";",
        True,
        ["id", "name", "amount"],
        2,
    )


def test_csv_without_a_header_gives_lists_and_encodings_are_detected(file_storage, organization):
    latin = "1,Zoë,12\n2,Chloé,7\n3,Ana,9\n".encode("cp1252")
    out = parsed(organization, "x.csv", latin)
    assert out["encoding"] == "cp1252" and out["header"] is False
    assert out["rows"][0] == ["1", "Zoë", "12"]
    bom = "\ufeffcity,temp\nParis,12\n".encode()
    assert parsed(organization, "t.csv", bom)["rows"] == [{"city": "Paris", "temp": "12"}]
    utf16 = "a\tb\nx\ty\n".encode("utf-16")
    assert parsed(organization, "t.tsv", utf16, header=True)["rows"] == [{"a": "x", "b": "y"}]


def test_json_and_json_lines(file_storage, organization):
    assert parsed(organization, "a.json", json.dumps([{"a": 1}, {"a": 2}]).encode())["rows"] == [{"a": 1}, {"a": 2}]
    lines = b'{"a": 1}\n\n{"a": [2]}\n'
    assert parsed(organization, "a.jsonl", lines)["rows"] == [{"a": 1}, {"a": [2]}]
    assert parsed(organization, "blob", b'{"one": true}', format="json")["rows"] == [{"one": True}]
    with pytest.raises(PermanentError, match="line 2 is not JSON"):
        parsed(organization, "bad.jsonl", b'{"a": 1}\n{nope\n')


@pytest.mark.parametrize(
    "setting, value, data",
    [
        ("POTAFLOW_PARSE_MAX_ROWS", 2, b"a\n1\n2\n3\n"),
        ("POTAFLOW_PARSE_MAX_COLUMNS", 2, b"a,b,c\n1,2,3\n"),
        ("POTAFLOW_PARSE_MAX_CELL_CHARS", 10, b"a,b\n1," + b"x" * 50 + b"\n"),
        ("POTAFLOW_PARSE_MAX_OUTPUT_BYTES", 100, b"a,b\n" + b"123,456\n" * 40),
    ],
)
def test_each_parse_bound_is_an_error_naming_its_setting(file_storage, organization, settings, setting, value, data):
    setattr(settings, setting, value)
    with pytest.raises(PermanentError, match=setting):
        parsed(organization, "big.csv", data, header=True)


def test_another_organizations_file_is_not_found(file_storage, organization):
    other = Organization.objects.create(name="Other", slug="other")
    theirs = stored_file(other, "secret.csv", b"a\n1\n")
    with pytest.raises(PermanentError, match="does not exist"):
        parse.run({"file": theirs}, file_ctx(organization))
    with pytest.raises(PermanentError, match="not a file reference"):
        parse.run({"file": "/etc/passwd"}, file_ctx(organization))


def test_store_keeps_a_copy_at_a_cleaned_path_and_a_repeat_overwrites_it(file_storage, organization):
    data = b"report bytes"
    ref = stored_file(organization, "r.csv", data)
    out = store.run({"file": ref, "path": "/reports//2026/./r<1>.csv"}, file_ctx(organization))
    key = f"org-{organization.pk}/stored/reports/2026/r_1_.csv"
    assert out["location"].endswith(key) and out["sha256"] == hashlib.sha256(data).hexdigest()
    if file_storage.kind == "s3":
        assert out["location"] == f"s3://potaflow-test/potaflow/{key}"
    again = store.run({"file": ref, "path": "reports/2026/r<1>.csv"}, file_ctx(organization))
    assert again["location"] == out["location"]
    assert file_storage.objects()[key] == data
    assert RunFile.objects.filter(origin="stored").count() == 1


@pytest.mark.parametrize("path", ["../../etc/passwd", "a/../../b", "  /./ "])
def test_store_refuses_a_path_that_climbs_out_or_names_nothing(file_storage, organization, path):
    ref = stored_file(organization, "r.csv", b"x")
    with pytest.raises(PermanentError, match="config.path"):
        store.run({"file": ref, "path": path}, file_ctx(organization))
    assert list(file_storage.objects()) == [f"org-{organization.pk}/files/{ref['id']}"]


# -- review: hostile CSV and paths ------------------------------------------------------
def test_a_hostile_csv_sample_is_read_in_linear_time(file_storage, organization):
    """csv.Sniffer's regular expressions took about 75 s of a worker on this 64 KiB sample."""
    ref = stored_file(organization, "evil.csv", b',"' * 32_000 + b"\n1,2\n")
    started = time.monotonic()
    with pytest.raises(PermanentError):  # unbalanced quotes: unreadable, said so
        parse.run({"file": ref, "format": "csv"}, file_ctx(organization))
    assert time.monotonic() - started < 5


def test_the_column_bound_holds_for_a_csv_with_a_header(file_storage, organization, settings):
    settings.POTAFLOW_PARSE_MAX_COLUMNS = 10
    ref = stored_file(organization, "wide.csv", b"name,email\n" + b"Ada,a@x" + b"," * 500 + b"\n")
    with pytest.raises(PermanentError, match="row 2 has 502 columns.*POTAFLOW_PARSE_MAX_COLUMNS"):
        parse.run({"file": ref, "format": "csv", "header": True}, file_ctx(organization))


@pytest.mark.parametrize(
    "path, problem",
    [("a" * 256 + "/x.csv", "longer than 255 bytes"), (("é" * 100 + "/") * 3, "longer than 512 bytes"),
     ("reports/\u2025/x.csv", "climbs out")],  # U+2025 is ".." once normalized (NFKC)
)  # fmt: skip
def test_store_refuses_a_path_a_disk_or_a_bucket_could_not_take(file_storage, organization, path, problem):
    ref = stored_file(organization, "a.csv", b"a")
    with pytest.raises(PermanentError, match=problem):
        store.run({"file": ref, "path": path}, file_ctx(organization))
    assert RunFile.objects.count() == 1
