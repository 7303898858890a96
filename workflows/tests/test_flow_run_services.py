"""The flow tests whose engine has a PostgreSQL path of its own (the one-statement fan-in of a loop's
iterations, the run's lock), run again on PostgreSQL and Redis: CI's embedded leg runs them on SQLite."""

import pytest

from workflows.tests.test_flow_run import (  # noqa: F401 - the fixtures and tests run here again
    celery_worker_env,
    http,
    org,
    stack,
    test_an_item_failing_stops_the_loop_and_fails_the_run_by_default,
    test_an_item_that_fails_then_succeeds_on_retry_and_the_idempotency_keys,
    test_each_path_of_a_branch_is_taken_by_its_payload_and_the_run_goes_on_after_it,
    test_on_item_failure_continue_records_the_failed_item_and_goes_on,
    test_over_max_items_is_a_step_failure_naming_the_limit_and_the_setting,
    test_stop_ends_the_run_with_its_status_and_message,
    test_the_error_path_runs_once_on_a_dead_letter_with_the_failure_and_not_on_success,
    test_three_items_run_one_after_the_other_and_the_loop_output_is_read_after_it,
    test_twenty_items_four_at_a_time,
)

pytestmark = [pytest.mark.slow, pytest.mark.services]
