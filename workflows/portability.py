"""Workflows as portable JSON documents: export, import, and the built-in templates.

An export is ``{"potaflow_export": 2, "workflow": {...}, "steps": [...],
"on_failure": [...]}``: the trigger settings, the steps (their nested step lists
inside branch and for_each configs) and the error path, with every step's credential,
nested ones included, as a *reference* (``{"name": ..., "kind": ...}``), never a secret; the webhook token and secrets
stay behind (``workflow.webhook_secret_set`` only says one was set). A document
moves a workflow between organizations or installations and is what the
built-in templates (``templates_catalog/*.json``) are.

``workflow_import`` checks the whole document before writing anything and
raises ``WorkflowInvalid`` naming every problem at once (document paths:
``workflow.schedule``, ``steps[1].config.url``, ``steps[0].credential``). A
credential reference maps to the importing organization's credential of the
same name and kind, or to the one the caller names for it (``credentials``:
reference name -> credential id). The imported workflow is inactive until
someone activates it (it has no secret yet, and its credentials may need a look).
Documents of format 1 (flat steps, no error path) still import.
"""

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

from django.utils import timezone

from accounts.models import Organization, User
from integrations.models import Credential

from .flow import tree
from .intake.signatures import SIGNING_FIELDS
from .models import STEP_SPEC_FIELDS, Workflow
from .services import workflow_create
from .validation import WorkflowInvalid, validate_definition

EXPORT_FORMAT = 2
# Formats ``workflow_import`` reads: 1 (flat steps) and 2 (nested steps, on_failure).
IMPORT_FORMATS = (1, 2)
# What a document holds of a workflow: no token, no secret (the previous secret neither).
EXPORT_WORKFLOW_FIELDS = (
    "name",
    "description",
    "trigger_type",
    "schedule",
    "timezone",
    "webhook_body_as_file",
    *(f for f in SIGNING_FIELDS if f != "webhook_secret_previous"),
)
# Switches (true/false), exported only when on: a document of a workflow without them stays as it was.
EXPORT_SWITCHES = ("webhook_body_as_file",)
EXPORT_STEP_FIELDS = STEP_SPEC_FIELDS
TOP_LEVEL_KEYS = {"potaflow_export", "exported_at", "source", "template", "workflow", "steps", "on_failure"}
CATALOG_DIR = Path(__file__).resolve().parent / "templates_catalog"


# -- export ------------------------------------------------------------------------
def workflow_export(workflow: Workflow) -> dict[str, Any]:
    """The workflow as a document (its current definition)."""
    steps = workflow.steps.select_related("credential").order_by("position")
    document: dict[str, Any] = {
        "potaflow_export": EXPORT_FORMAT,
        "exported_at": timezone.now().isoformat(),
        "source": {"workflow_id": workflow.pk, "version": workflow.version},
        "workflow": {
            **{
                field: getattr(workflow, field)
                for field in EXPORT_WORKFLOW_FIELDS
                if field not in EXPORT_SWITCHES or getattr(workflow, field)
            },
            "webhook_secret_set": bool(workflow.webhook_secret),
        },
        "steps": [
            {
                **{field: getattr(step, field) for field in EXPORT_STEP_FIELDS},
                "config": copy.deepcopy(step.config),
                "credential": {"name": step.credential.name, "kind": step.credential.kind} if step.credential else None,
            }
            for step in steps
        ],
        "on_failure": copy.deepcopy(workflow.on_failure or []),
    }
    # Nested and error-path steps hold credential ids: exported as references like the top-level ones.
    nested = [loc for loc in tree.walk_definition(document) if loc.depth > 1 or loc.on_failure]
    ids = {credential for loc in nested if isinstance(credential := loc.spec.get("credential"), int)}
    known = {c.pk: c for c in Credential.objects.filter(organization_id=workflow.organization_id, pk__in=ids)}
    for located in nested:
        spec = cast("dict[str, Any]", located.spec)
        credential = known.get(spec.get("credential"))  # type: ignore[arg-type]
        for extra in set(spec) - {*EXPORT_STEP_FIELDS, "credential"}:
            del spec[extra]
        spec["credential"] = {"name": credential.name, "kind": credential.kind} if credential else None
    return document


# -- import ------------------------------------------------------------------------
def workflow_import(
    *,
    organization: Organization,
    document: Any,
    created_by: User | None = None,
    name: str | None = None,
    credentials: Mapping[str, Any] | None = None,
) -> Workflow:
    """Create an inactive workflow from a document; ``WorkflowInvalid`` lists every problem."""
    # A copy: the steps keep references into it, and a template's document is shared by the process.
    document = copy.deepcopy(document)
    fields, steps = check_document(organization, document, name=name, credentials=credentials)
    return workflow_create(organization=organization, created_by=created_by, is_active=False, steps=steps, **fields)


def check_document(
    organization: Organization,
    document: Any,
    *,
    name: str | None = None,
    credentials: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``workflow_create`` arguments a document stands for, or ``WorkflowInvalid`` naming each problem."""
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if not isinstance(document, Mapping):
        raise WorkflowInvalid({"document": ["An export document is a JSON object."]})
    document = copy.deepcopy(document)  # nested steps are mapped in place
    version = document.get("potaflow_export")
    if version not in IMPORT_FORMATS or isinstance(version, bool):
        formats = " or ".join(str(f) for f in IMPORT_FORMATS)
        add("potaflow_export", f"Not a PotaFlow export of format {formats} (got {version!r}).")
    elif version == 1 and "on_failure" in document:
        add("on_failure", "An error path (on_failure) needs a document of format 2.")
    for key in sorted(set(document) - TOP_LEVEL_KEYS):
        add(key, f"Unknown key {key!r} in an export document.")

    fields = _workflow_fields(document.get("workflow"), add)
    if name:
        fields["name"] = name
    mapping = dict(credentials or {})
    raw_steps = document.get("steps", [])
    steps: list[dict[str, Any]] = []
    mapped_fields: set[str] = set()
    if not isinstance(raw_steps, list):
        add("steps", "steps must be a list.")
        raw_steps = []
    for index, raw in enumerate(raw_steps):
        where = f"steps[{index}]"
        if not isinstance(raw, Mapping):
            add(where, "A step must be an object.")
            continue
        for key in sorted(set(raw) - {*EXPORT_STEP_FIELDS, "credential", "position"}):
            add(f"{where}.{key}", f"Unknown step field {key!r}.")
        spec = {field: raw[field] for field in EXPORT_STEP_FIELDS if field in raw}
        spec["credential"] = _resolve_reference(organization, raw.get("credential"), mapping, where, add)
        if f"{where}.credential" in errors:
            mapped_fields.add(f"{where}.credential")
        steps.append(spec)

    on_failure = document.get("on_failure", [])
    if not isinstance(on_failure, list):
        add("on_failure", "on_failure must be a list of steps.")
        on_failure = []
    # Nested and error-path steps: the same fields, their credential references mapped to ids.
    for located in tree.walk_definition({"steps": steps, "on_failure": on_failure}):
        if located.depth == 1 and not located.on_failure:
            continue
        spec = cast("dict[str, Any]", located.spec)
        for key in sorted(set(spec) - {*EXPORT_STEP_FIELDS, "credential"}):
            add(f"{located.where}.{key}", f"Unknown step field {key!r}.")
            del spec[key]
        credential = _resolve_reference(organization, spec.get("credential"), mapping, located.where, add)
        if f"{located.where}.credential" in errors:
            mapped_fields.add(f"{located.where}.credential")
        spec["credential"] = credential.pk if credential is not None else None
    fields["on_failure"] = on_failure

    workflow = Workflow(organization=organization, **fields)
    try:
        validate_definition(workflow, steps)
    except WorkflowInvalid as exc:
        for field, messages in exc.errors.items():
            if field in mapped_fields:
                continue  # the missing credential is already named; "needs a credential" would repeat it
            path = field if field.startswith(("steps", "on_failure")) else f"workflow.{field}"
            for message in messages:
                add(path, message)
    if errors:
        raise WorkflowInvalid(errors)
    return fields, steps


def _workflow_fields(raw: Any, add) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        add("workflow", "workflow must be an object with the workflow's settings.")
        return {"name": ""}
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "webhook_secret_set":
            continue  # informative: the secret itself never travels
        if key not in EXPORT_WORKFLOW_FIELDS:
            add(f"workflow.{key}", f"Unknown workflow field {key!r}.")
        elif key in EXPORT_SWITCHES:
            if isinstance(value, bool):
                fields[key] = value
            else:
                add(f"workflow.{key}", f"{key} must be true or false.")
        elif not isinstance(value, str):
            add(f"workflow.{key}", f"{key} must be a string.")
        else:
            fields[key] = value
    fields.setdefault("name", "")
    return fields


def _resolve_reference(
    organization: Organization, reference: Any, mapping: Mapping[str, Any], where: str, add
) -> Credential | None:
    """The importing organization's credential for a reference (by explicit mapping, else name and kind)."""
    if reference is None:
        return None
    field = f"{where}.credential"
    if not isinstance(reference, Mapping) or not all(isinstance(reference.get(k), str) for k in ("name", "kind")):
        add(field, 'A credential reference is {"name": ..., "kind": ...} or null.')
        return None
    ref_name, kind = reference["name"], reference["kind"]
    mine = Credential.objects.filter(organization=organization)
    if ref_name in mapping:
        try:
            chosen = mine.filter(pk=int(mapping[ref_name])).first()
        except (TypeError, ValueError):
            chosen = None
        if chosen is None:
            add(field, f"Credential reference {ref_name!r} is mapped to {mapping[ref_name]!r}, not one of yours.")
        elif chosen.kind != kind:
            add(field, f"Credential reference {ref_name!r} needs kind {kind}; {chosen.name!r} is {chosen.kind}.")
            chosen = None
        return chosen
    credential = mine.filter(name=ref_name, kind=kind).first()
    if credential is None:
        add(
            field,
            f"No {kind} credential named {ref_name!r} in this organization: create it, "
            "or map the reference to one of your credentials.",
        )
    return credential


def credential_references(document: Mapping[str, Any]) -> list[dict[str, str]]:
    """The distinct credential references of a document, in step order (nested steps and the error path too)."""
    seen: dict[str, dict[str, str]] = {}
    for located in tree.walk_definition(document):
        reference = located.spec.get("credential")
        if isinstance(reference, Mapping) and isinstance(reference.get("name"), str):
            seen.setdefault(reference["name"], {"name": reference["name"], "kind": str(reference.get("kind"))})
    return list(seen.values())


# -- templates -----------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    slug: str
    title: str
    description: str
    document: dict[str, Any]

    @property
    def trigger_type(self) -> str:
        return self.document["workflow"]["trigger_type"]

    @property
    def credentials(self) -> list[dict[str, str]]:
        return credential_references(self.document)


@cache
def templates() -> tuple[Template, ...]:
    """The built-in templates: export documents shipped in ``templates_catalog/`` (read once)."""
    found = []
    for path in sorted(CATALOG_DIR.glob("*.json")):
        document = json.loads(path.read_text())
        meta = document.get("template") or {}
        found.append(
            Template(
                slug=path.stem,
                title=meta.get("title", path.stem),
                description=meta.get("description", ""),
                document=document,
            )
        )
    return tuple(found)


def template(slug: str) -> Template | None:
    return next((t for t in templates() if t.slug == slug), None)


__all__ = [
    "EXPORT_FORMAT",
    "Template",
    "check_document",
    "credential_references",
    "template",
    "templates",
    "workflow_export",
    "workflow_import",
]
