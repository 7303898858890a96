"""The contract of an integration: its actions (``Action``) and credential kinds (``KindSpec``).

An integration is a folder ``integrations/<name>/`` whose package exposes
``ACTIONS`` (``Action`` subclasses) and ``CREDENTIAL_KINDS`` (``KindSpec``
values); ``integrations.registry`` lists the folders and says how to add one.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import jsonschema

from integrations.errors import ActionError, ConfigError
from integrations.file_access import FileAccess
from integrations.storable import JSONValue
from integrations.template_syntax import single_expression

# What a preview shows in place of a secret (a header's value, a token).
PREVIEW_MASK = "••••••"


class PreviewCredential(Protocol):
    """The part of a step's credential a preview may read: its kind and public fields, never a secret."""

    @property
    def kind(self) -> str: ...

    @property
    def public_data(self) -> Any: ...


def preview_row(label: str, value: JSONValue) -> dict[str, JSONValue]:
    """One row of a preview's ``rows`` (see ``Action.preview``)."""
    return {"label": label, "value": value}


class TokenSource(Protocol):
    """The access token of a connection (an OAuth credential, ``integrations.oauth``).

    ``ActionContext.connection`` holds one when the step's credential is a
    connection; ``ActionContext.credential["access_token"]`` is then its current
    token, refreshed before the step when it was about to expire. An action
    whose call is refused as unauthorized (HTTP 401, Slack's ``invalid_auth``)
    calls ``refreshed_after(token)`` once and retries once with what it returns:
    the refresh is single-flight across every process, and a connection that
    cannot be refreshed raises ``PermanentError`` ("reconnect <provider> in
    Credentials") and is marked *needs reconnect*.
    """

    @property
    def access_token(self) -> str: ...

    def refreshed_after(self, rejected: str) -> str: ...


@dataclass(frozen=True)
class ActionContext:
    """What an action may know about the step it runs in (read-only).

    ``run_id`` is the run's UUID as text (a test run's is ``"test-<uuid>"``).

    ``credential`` holds the decrypted secret fields of the step's credential
    (or None), each value of the type its kind's ``Field`` declares (checked when the
    credential was saved); ``credential_kind`` its kind. ``template_context`` is what the
    config was rendered with (trigger, steps, run, workflow); ``raw_config`` the config
    before rendering (an action tells literal values from rendered, untrusted ones with it).
    ``files`` reads and writes the organization's files (``integrations.file_access``).
    ``connection``: the token source when the credential is a connection (see ``TokenSource``).
    ``idempotency_key`` is the same for every attempt of this step in this run
    (retries, redelivery, recovery) and new for a replay or another run: an
    action passes it to a destination that can drop repeats.
    """

    run_id: str
    workflow_id: int
    organization_id: int
    step_key: str
    attempt: int = 1
    idempotency_key: str = ""
    timeout_seconds: float = 30.0
    credential: Mapping[str, Any] | None = None
    credential_kind: str | None = None
    template_context: Mapping[str, Any] = field(default_factory=dict)
    raw_config: Mapping[str, Any] = field(default_factory=dict)
    files: FileAccess | None = None
    connection: TokenSource | None = None


class Action:
    """Base class for action types.

    Subclasses set:
    - ``name``: the registry name users put in ``Step.action_type`` (``"slack.message"``).
    - ``title`` and ``description``: shown in the admin and ``GET /api/actions/``.
    - ``config_schema``: a JSON Schema (draft 2020-12) for the step's config,
      checked when a step is saved. Template strings are allowed wherever the
      schema says ``string``; a value that is a single ``{{ expression }}``
      is accepted for any type because its type is known only at run time.
    - ``credential_kind``: the ``Credential.kind`` a step must use (a string),
      several accepted kinds (a tuple), or None for no credential.
    - ``credential_required``: whether a step must have a credential.
    - ``has_side_effects``: False for actions that only compute (transform,
      filter): a worker dying in them leaves nothing in doubt.
    - ``runs_in_process``: True for actions that only compute in the worker's
      memory (no network, file, credential or clock-bound wait: transform,
      filter): such a step runs in the task that finished the step before it,
      without a broker message of its own (``workflows.execution.engine``).
    - ``computes_ahead``: True for actions whose ``run`` is a quick, pure function of
      the rendered config (transform, filter): in a straight run the engine may compute
      such a step before claiming it, from the outputs in memory, and record it with
      the steps around it in one statement (``workflows.execution.engine``). A step
      that may take long (or a test's counting one) must not set it: it would show
      ``pending`` while it computes.
    - ``expression_fields``: config fields that hold an expression, where a
      bare ``a > 1`` is read as ``{{ a > 1 }}`` (``filter``'s condition).
    - ``expression_items``: (list field, item field) pairs whose items' field holds an
      expression (``branch``'s ``("paths", "when")``).
    - ``control``: True for the flow control steps (``integrations.control``), which
      the engine executes itself; their ``run`` refuses to be called.
    - ``condition_fields``: config fields that are conditions. An undefined value in one is
      false there, not an error (``workflows.templating``'s condition rule, as n8n and Zapier
      users expect); the rendered config then names what was undefined under
      ``"_undefined"`` (field -> names), for the step's output to say so.
    - ``output_limit_setting``: the setting bounding what the step's output may
      weigh when stored, for actions whose output is the point (``file.parse``'s
      rows); None: ``POTAFLOW_STEP_OUTPUT_MAX_BYTES`` like every other step.

    ``repeat_is_safe(config)`` says whether running the step again after an
    attempt of unknown outcome (its worker died mid-call) cannot duplicate an
    effect, e.g. because the destination drops repeats of the idempotency key.
    It decides the default of a step's ``on_in_doubt`` policy.

    and implement ``run(config, ctx) -> JSONValue`` which receives the *rendered*
    config (valid for the schema unless a ``{{ expression }}`` rendered otherwise) and
    returns the step's output: a JSON value, an object for the actions that call a
    service (``transform`` returns whatever it built). It raises
    ``RetryableError`` for transient failures and ``PermanentError`` for the
    rest (see ``integrations.errors``); anything else it raises is recorded as
    a permanent failure with the exception's type and message.

    ``validate_config(config)`` may be extended for checks a schema cannot
    express (e.g. that a named handler exists); it raises ``ConfigError``.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    credential_kind: ClassVar[str | tuple[str, ...] | None] = None
    credential_required: ClassVar[bool] = False
    has_side_effects: ClassVar[bool] = True
    runs_in_process: ClassVar[bool] = False
    computes_ahead: ClassVar[bool] = False
    expression_fields: ClassVar[tuple[str, ...]] = ()
    expression_items: ClassVar[tuple[tuple[str, str], ...]] = ()
    control: ClassVar[bool] = False
    condition_fields: ClassVar[tuple[str, ...]] = ()
    output_limit_setting: ClassVar[str | None] = None

    def run(self, config: dict[str, Any], ctx: ActionContext) -> JSONValue:
        raise NotImplementedError("Action subclasses must implement run(config, ctx)")

    @classmethod
    def accepted_credential_kinds(cls) -> tuple[str, ...]:
        if cls.credential_kind is None:
            return ()
        if isinstance(cls.credential_kind, str):
            return (cls.credential_kind,)
        return tuple(cls.credential_kind)

    def repeat_is_safe(self, config: Mapping[str, Any]) -> bool:
        return not self.has_side_effects

    def request_summary(self, config: dict[str, Any]) -> dict[str, JSONValue] | None:
        """What an attempt sends, for its record: where to, never secrets or whole bodies."""
        return None

    def preview(self, config: Mapping[str, Any], credential: PreviewCredential | None = None) -> dict[str, JSONValue]:
        """What the step would send with this rendered config, secrets masked (``PREVIEW_MASK``).

        Test-with-sample-data (``workflows.dry_run``) shows it for a step it does not send, and the
        builder renders it without knowing the action, from these keys (each optional):
        ``request`` (one line, e.g. "POST https://..."), ``rows`` (``[{"label", "value"}]``, made
        with ``preview_row``; an object value shows as rows of its own), ``body`` (text shown as
        is) and ``notes`` (what the real run would object to). Other keys are the action's own
        (``kind`` names it) for API readers. Control steps answer what they would decide.
        Default: the attempt's ``request_summary`` as rows, else the rendered config.
        """
        summary = self.request_summary(dict(config))
        shown = summary if summary is not None else config
        rows: list[JSONValue] = [preview_row(str(k), v) for k, v in shown.items()]
        return {"kind": "other", "summary": summary, "config": dict(config), "rows": rows}

    def own_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The part of the config rendered as templates for this step: all of it, except for
        control steps, whose nested step lists are rendered by each nested step when it runs."""
        return dict(config)

    def validate_config(self, config: Any) -> None:
        """Check ``config`` (unrendered, may hold templates) against the schema."""
        validator = jsonschema.Draft202012Validator(self.config_schema)
        for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
            if is_single_expression(error.instance) and error.validator in ("type", "enum", "format"):
                continue  # a {{ expression }} gets its real type at run time
            where = "config" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            raise ConfigError(f"{where}: {error.message}", field=where)

    def validate_credential_use(self, config: Any, credential_public: Mapping[str, Any]) -> None:
        """Check, when a step is saved, that its (unrendered) config may use a credential with
        these public fields (e.g. its ``allowed_hosts``); raises ``ConfigError``. Default: no rule."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title or self.name,
            "description": self.description,
            "config_schema": self.config_schema,
            "credential_kind": self.credential_kind
            if not isinstance(self.credential_kind, tuple)
            else list(self.credential_kind),
            "credential_required": self.credential_required,
            "repeat_is_safe_by_default": self.repeat_is_safe({}),
        }


def is_single_expression(value: Any) -> bool:
    """Whether ``value`` is a string holding exactly one ``{{ expression }}`` (typed at run time)."""
    return isinstance(value, str) and single_expression(value) is not None


@dataclass(frozen=True)
class Field:
    """One field of a credential kind. A ``secret`` field is encrypted at rest and never shown
    again; the others are stored in ``Credential.public_data`` and may be displayed.
    ``coerce`` (for ``type="hosts"`` and the like) cleans a value or raises ``ValueError``."""

    name: str
    secret: bool = False
    required: bool = True
    type: str = "string"  # string | integer | email | choice | json | hosts
    choices: tuple[str, ...] = ()
    default: Any = None
    help: str = ""
    coerce: Callable[[Any], Any] | None = None


FieldErrors = dict[str, str]


@dataclass(frozen=True)
class KindSpec:
    """A credential kind: its stored value (``kind``, never renamed: it is in the database),
    its label, its fields and the checks across them.

    - ``extra_checks``: functions ``(public, secret) -> {field: message}`` run after the fields.
    - ``derived_public``: ``(public, secret) -> dict`` of public values computed from the
      secret ones (e.g. a service account's address, shown so users know whom to share with).
    - ``auth_headers``: ``(revealed fields) -> headers`` for kinds an action sends as HTTP
      headers (how the credential authenticates a request).
    - ``connection``: for a *connection* (a kind connected through OAuth 2.0 rather than
      typed in), its provider: an ``integrations.oauth.providers.ConnectionSpec``.
    """

    kind: str
    label: str
    fields: tuple[Field, ...]
    help: str = ""
    extra_checks: tuple[Callable[[dict[str, Any], dict[str, Any]], FieldErrors], ...] = ()
    derived_public: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
    auth_headers: Callable[[Mapping[str, Any]], dict[str, str]] | None = None
    connection: Any = None

    @property
    def secret_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.secret)

    def sent_secrets(self, revealed: Mapping[str, Any]) -> list[str]:
        """What this kind puts on the wire, exactly: each auth header's value and its credentials part.

        The scrubber (``integrations.services.credential_secret_values``) takes these from
        ``auth_headers`` itself, so what is scrubbed is what was sent, however the kind encodes it
        (Basic's base64 of latin-1 or UTF-8 bytes). A kind whose fields are incomplete here (a
        connection before its token is fetched) sends nothing yet: its tokens are added when fetched.
        """
        if self.auth_headers is None:
            return []
        try:
            headers = self.auth_headers(revealed)
        except (KeyError, TypeError, ValueError, ActionError):
            return []
        values: list[str] = []
        for value in headers.values():
            # The exact header value ("Bearer <token>", "Basic <pair>"), and its credentials alone, for a
            # destination that echoes only those.
            values.append(value)
            _scheme, _, credentials = value.partition(" ")
            if credentials:
                values.append(credentials)
        return values

    @property
    def public_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if not f.secret)
