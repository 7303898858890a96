"""Each action previews itself (``Action.preview``): test-with-sample-data shows what the action says
it would send, so an action that dry_run has never heard of (a plugin's) is previewed as fully as a
built-in one, and the built-ins give the generic display (request, rows, body, notes) the builder renders."""

import sys
import textwrap

import pytest

from accounts.models import Organization
from integrations import registry
from integrations.base import PREVIEW_MASK, preview_row
from integrations.models import Credential
from workflows import dry_run
from workflows.models import TriggerType
from workflows.services import workflow_create

pytestmark = pytest.mark.django_db

PLUGIN = '''
from integrations.base import Action, preview_row


class Fax(Action):
    """A side-effecting plugin action with a preview of its own."""

    name = "acme.fax"
    title = "Fax (plugin)"
    config_schema = {"type": "object", "properties": {"number": {"type": "string"}, "page": {"type": "string"}}}

    def preview(self, config, credential=None):
        return {"kind": "fax", "request": "FAX " + config["number"], "rows": [preview_row("Pages", 1)],
                "body": config["page"], "notes": ["the fax line is slow"]}

    def run(self, config, ctx):
        raise AssertionError("a test with sample data does not send")


class Pager(Action):
    """One without a preview of its own: the default shows its request summary."""

    name = "acme.pager"
    config_schema = {"type": "object", "properties": {"to": {"type": "string"}, "secret_note": {"type": "string"}}}

    def request_summary(self, config):
        return {"to": config.get("to")}

    def run(self, config, ctx):
        raise AssertionError("a test with sample data does not send")
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed distribution with two ``potaflow.actions`` entry points, as a plugin author ships one."""
    (tmp_path / "acme_fax").mkdir()
    (tmp_path / "acme_fax" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "acme_fax-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-fax\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[potaflow.actions]\nacme.fax = acme_fax:Fax\nacme.pager = acme_fax:Pager\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.reset()
    yield
    sys.modules.pop("acme_fax", None)
    registry.reset()


@pytest.fixture
def org():
    return Organization.objects.create(name="Acme", slug="acme")


def test_a_plugin_action_is_previewed_by_its_own_preview(org, plugin):
    fax_config = {"number": "{{ trigger.body.n }}", "page": "Hi {{ trigger.body.who }}"}
    steps = [
        {"key": "fax", "action_type": "acme.fax", "config": fax_config},
        {"key": "page", "action_type": "acme.pager", "config": {"to": "ops", "secret_note": "x"}},
    ]
    wf = workflow_create(organization=org, name="Fax", trigger_type=TriggerType.WEBHOOK, steps=steps)
    result = dry_run.dry_run(workflow=wf, payload={"n": "+49 30 1234", "who": "Ann"})
    fax, page = result["steps"]
    assert fax["status"] == "preview" and fax["output"] is None
    assert fax["would_send"] == {
        "kind": "fax",
        "request": "FAX +49 30 1234",
        "rows": [{"label": "Pages", "value": 1}],
        "body": "Hi Ann",
        "notes": ["the fax line is slow"],
    }
    assert page["status"] == "preview"
    assert page["would_send"]["rows"] == [preview_row("to", "ops")]  # its request summary, not its whole config


def test_the_builtin_previews_give_the_generic_display(org):
    hosts = {"allowed_hosts": ["crm.example.com"]}
    cred = Credential(organization=org, name="api", kind="http_bearer", public_data=hosts)
    http = registry.get_action("http.request").preview(
        {"method": "post", "url": "https://crm.example.com/c", "query": {"a": "1"}, "body": {"x": 1}}, cred
    )
    assert http["request"] == "POST https://crm.example.com/c?a=1"
    assert http["rows"] == [preview_row("Headers", http["headers"])]
    assert http["headers"]["Authorization"] == f"Bearer {PREVIEW_MASK}"
    assert http["body"] == '{\n  "x": 1\n}' and http["notes"] == []
    refused = registry.get_action("http.request").preview({"url": "https://elsewhere.example.com/"}, cred)
    assert refused["notes"] and refused["notes"][0].startswith("would be refused:")
    email = registry.get_action("email.send").preview({"to": ["a@b.c"], "subject": "Hi", "text": "Body"})
    assert email["rows"][0] == preview_row("To", ["a@b.c"]) and email["body"] == "Body"
    assert email["rows"][2] == preview_row("From", "(the credential's)")
    slack = registry.get_action("slack.message").preview({"channel": "#ops", "text": "up"})
    assert slack["rows"] == [preview_row("Channel", "#ops"), preview_row("Text", "up"), preview_row("Blocks", "none")]
    sheets = registry.get_action("sheets.append_row").preview({"spreadsheet": "s1", "values": [1, "a"]})
    assert sheets["rows"][-1] == preview_row("Row", '[1, "a"]')
    assert sheets["rows"][1] == preview_row("Worksheet", "(the first worksheet)")
