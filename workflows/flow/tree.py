"""The shape of a flow definition: a tree of step lists (issue 19).

The top level is an ordered list of steps; control steps hold nested lists in
their config (``branch``: ``paths[i].steps`` and ``otherwise``; ``for_each``:
``steps``); the workflow's ``on_failure`` is one more list, run when a run
fails. Every module that walks a definition (validation, the engine, the run
page, dry runs, export) walks it through this one, so a new control step is
taught here once.
"""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BRANCH = "branch"
FOR_EACH = "for_each"
DELAY = "delay"
WAIT = "wait"
STOP = "stop"
CONTROL_TYPES = frozenset({BRANCH, FOR_EACH, DELAY, WAIT, STOP})
# Control steps that hold nested step lists.
CONTAINER_TYPES = frozenset({BRANCH, FOR_EACH})
OTHERWISE = "otherwise"


@dataclass(frozen=True)
class Slot:
    """One nested step list of a container step."""

    name: str  # a branch path's name, "otherwise", or "steps" for a loop's body
    where: str  # location of the list relative to the step: "config.paths[0].steps"
    steps: Sequence[Mapping[str, Any]]
    when: Any = None  # a branch path's condition (None for otherwise and loop bodies)


@dataclass(frozen=True)
class Located:
    """A step spec and where it sits in the tree."""

    spec: Mapping[str, Any]
    where: str  # "steps[2].config.paths[0].steps[1]": the exact place, as validation errors name it
    depth: int  # 1 for a top-level (or error-path) step
    # The container steps above it, outermost first, each with the slot it is in: (("route", "order"),)
    ancestors: tuple[tuple[str, str], ...]
    in_loop: bool  # inside a for_each body (its instances are per item)
    on_failure: bool  # in the workflow's error path

    @property
    def key(self) -> str:
        return str(self.spec.get("key") or "")

    @property
    def action_type(self) -> str:
        return str(self.spec.get("action_type") or "")


def slots(spec: Mapping[str, Any]) -> list[Slot]:
    """The nested step lists of a step, in order (none for a plain step). Tolerates malformed configs:
    validation reports them, walking never fails on them."""
    config = spec.get("config") if isinstance(spec, Mapping) else None
    if not isinstance(config, Mapping):
        return []
    action_type = spec.get("action_type")
    out: list[Slot] = []
    if action_type == BRANCH:
        paths = config.get("paths")
        for i, path in enumerate(paths if isinstance(paths, list) else []):
            if isinstance(path, Mapping):
                steps = path.get("steps")
                out.append(
                    Slot(
                        name=str(path.get("name") or ""),
                        where=f"config.paths[{i}].steps",
                        steps=steps if isinstance(steps, list) else [],
                        when=path.get("when"),
                    )
                )
        otherwise = config.get(OTHERWISE)
        if isinstance(otherwise, list):
            out.append(Slot(name=OTHERWISE, where=f"config.{OTHERWISE}", steps=otherwise))
    elif action_type == FOR_EACH:
        steps = config.get("steps")
        out.append(Slot(name="steps", where="config.steps", steps=steps if isinstance(steps, list) else []))
    return out


def walk(
    steps: Sequence[Any],
    where: str = "steps",
    *,
    depth: int = 1,
    ancestors: tuple[tuple[str, str], ...] = (),
    in_loop: bool = False,
    on_failure: bool = False,
) -> Iterator[Located]:
    """Every step of a list and of its nested lists, depth first in definition order."""
    for index, spec in enumerate(steps if isinstance(steps, Sequence) else []):
        if not isinstance(spec, Mapping):
            continue
        here = f"{where}[{index}]"
        located = Located(spec, here, depth, ancestors, in_loop, on_failure)
        yield located
        for slot in slots(spec):
            yield from walk(
                slot.steps,
                f"{here}.{slot.where}",
                depth=depth + 1,
                ancestors=(*ancestors, (located.key, slot.name)),
                in_loop=in_loop or located.action_type == FOR_EACH,
                on_failure=on_failure,
            )


def walk_definition(definition: Mapping[str, Any]) -> Iterator[Located]:
    """Every step of a definition (``steps`` then ``on_failure``)."""
    yield from walk(definition.get("steps") or [], "steps")
    yield from walk(definition.get("on_failure") or [], "on_failure", on_failure=True)


def by_key(definition: Mapping[str, Any]) -> dict[str, Located]:
    """The steps of a definition by key (keys are unique in the whole tree; validation sees to it)."""
    return {located.key: located for located in walk_definition(definition)}


def scope_of_path(path: str, key: str) -> str:
    """The scope an instance's path starts with: "" or an iteration's ("lines[3]/"), never a branch's.

    An instance's path is its scope and its key (keys are unique in the whole tree). The steps of
    a branch's path keep the branch's scope; only a loop's iteration opens one (``iteration_scope``).
    The engine names its step-run rows so and the test with sample data names its results so.
    """
    return path[: len(path) - len(key)]


def iteration_scope(loop_path: str, index: int) -> str:
    """The scope of the instances of iteration ``index`` of the loop at ``loop_path``: "lines[3]/"."""
    return f"{loop_path}[{index}]/"


def is_control(spec: Mapping[str, Any]) -> bool:
    return spec.get("action_type") in CONTROL_TYPES


def visible_steps(steps: Sequence[Any], *, before: frozenset[str] = frozenset()) -> dict[str, frozenset[str]]:
    """For each step key, the keys of the steps sure to have run before it on its path.

    A step sees the steps before it in its own list and what its container saw (plus the
    container itself for a loop body: ``steps.<loop>`` is not final there, so the loop key
    is left out). After a container, the steps inside it are not visible (a path may not
    have been taken; a loop's steps are read through the loop's own output list).
    """
    out: dict[str, frozenset[str]] = {}
    seen = set(before)
    for spec in steps if isinstance(steps, Sequence) else []:
        if not isinstance(spec, Mapping):
            continue
        key = str(spec.get("key") or "")
        out[key] = frozenset(seen)
        for slot in slots(spec):
            out.update(visible_steps(slot.steps, before=frozenset(seen)))
        seen.add(key)
    return out


def visible_in_definition(definition: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """``visible_steps`` over the whole definition. The error path may run after any step
    failed, so it sees only its own earlier steps (others are read with ``default``)."""
    out = visible_steps(definition.get("steps") or [])
    out.update(visible_steps(definition.get("on_failure") or []))
    return out


@dataclass(frozen=True)
class Place:
    """Where a step sits for the engine: the list holding it, its index there, and its container."""

    steps: Sequence[Mapping[str, Any]]  # the list the step is in
    index: int
    container: str  # the key of the branch or loop holding the list ("" at the top level / error path)
    slot: str  # the slot's name in its container (a path's name, "otherwise", "steps"), "" at the top
    on_failure: bool


def places(definition: Mapping[str, Any]) -> dict[str, Place]:
    """Each step's place by key (what the engine needs to find what follows a step)."""
    out: dict[str, Place] = {}

    def index(steps: Any, container: str, slot: str, on_failure: bool) -> None:
        for i, spec in enumerate(steps if isinstance(steps, Sequence) else []):
            if not isinstance(spec, Mapping):
                continue
            key = str(spec.get("key") or "")
            out[key] = Place(steps, i, container, slot, on_failure)
            for nested in slots(spec):
                index(nested.steps, key, nested.name, on_failure)

    index(definition.get("steps") or [], "", "", False)
    index(definition.get("on_failure") or [], "", "", True)
    return out


def is_flow(definition: Mapping[str, Any]) -> bool:
    """Does the definition need the flow engine (control steps, an error path, continue_on_error)?
    A straight list of plain steps runs as before: one chain, completion checked by the last step."""
    if definition.get("on_failure"):
        return True
    return any(
        located.action_type in CONTROL_TYPES or located.spec.get("continue_on_error")
        for located in walk(definition.get("steps") or [])
    )


def segment(steps: Sequence[Mapping[str, Any]], start: int) -> list[Mapping[str, Any]]:
    """The straight run of a list from ``start``: up to and including its first control step
    (which decides what follows), or to the end of the list. One chain covers it."""
    out: list[Mapping[str, Any]] = []
    for spec in steps[start:]:
        out.append(spec)
        if is_control(spec):
            break
    return out
