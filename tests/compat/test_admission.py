"""The admission tests that matter, on each version of tests/compat/versions.py: the
schema and CEL rules of TaskRun (one-of, immutability, one-way STOPPED, the create-only
rule with optionalOldSelf), TaskRunSchedule and the connections, and what the
operator's start depends on. They are the suite's own tests, imported: conftest.py
points `control_plane` at the version under test."""

from __future__ import annotations

import pytest

from tests.e2e.test_connection_validation import (  # noqa: F401 - collected here
    cluster_name,
    custom,
    test_bad_cluster_ona_connections_are_rejected_at_apply,
    test_bad_connection_refs_are_rejected_at_apply,
    test_bad_ona_connections_are_rejected_at_apply,
    test_connection_ref_cannot_be_added_later,
    test_connection_ref_edit_is_rejected,
    test_duplicate_environment_ids_are_rejected,
    test_ona_connection_defaults,
)
from tests.e2e.test_schedule_validation import (  # noqa: F401 - collected here
    test_a_good_schedule_gets_its_defaults,
    test_a_name_too_long_for_its_runs_is_rejected,
    test_bad_schedules_are_rejected_at_apply,
)
from tests.e2e.test_validation import (  # noqa: F401 - collected here
    test_a_retrying_run_may_still_be_stopped_and_created_stopped_without_retries,
    test_bad_objects_are_rejected_at_apply,
    test_spec_is_immutable_except_desired_phase,
    test_stopped_cannot_go_back_to_running,
    test_taskref_edit_is_rejected,
)

pytestmark = pytest.mark.e2e
