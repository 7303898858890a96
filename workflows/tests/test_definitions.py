"""The one per-process cache of version definitions (webhook view and engine)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from workflows.execution.definitions import DefinitionCache
from workflows.models import TriggerType, WorkflowVersion
from workflows.services import workflow_create, workflow_current_version

STEPS = [{"key": "t", "action_type": "transform", "config": {"value": "{{ trigger.body }}"}}]


@pytest.fixture
def hook_wf(org):
    return workflow_create(organization=org, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=STEPS)


@pytest.mark.django_db
def test_a_definition_is_read_once_then_served_from_the_cache(hook_wf):
    version = workflow_current_version(hook_wf)
    cache = DefinitionCache()
    with CaptureQueriesContext(connection) as first:
        assert cache.get(version.pk) == version.definition
    with CaptureQueriesContext(connection) as second:
        assert cache.get(version.pk) == version.definition
    assert len(first.captured_queries) == 1
    assert len(second.captured_queries) == 0
    assert cache.known() == [version.pk]


@pytest.mark.django_db
def test_the_cache_is_bounded_and_drops_the_least_recently_used():
    cache = DefinitionCache(size=2)
    cache.remember(1, {"steps": [1]})
    cache.remember(2, {"steps": [2]})
    cache.get(1)  # used: 2 is now the oldest
    cache.remember(3, {"steps": [3]})
    assert sorted(cache.known()) == [1, 3]


@pytest.mark.django_db
def test_a_large_definition_is_not_kept(hook_wf):
    version = workflow_current_version(hook_wf)
    cache = DefinitionCache(max_bytes=10)
    assert cache.remember(version.pk, version.definition) == version.definition
    assert cache.known() == []
    stored = WorkflowVersion.objects.get(pk=version.pk).definition
    for _ in range(2):  # read every time
        with CaptureQueriesContext(connection) as read:
            assert cache.get(version.pk) == stored
        assert len(read.captured_queries) == 1
