from __future__ import annotations

import pytest

from apigen_envs.domain import Domain
from apigen_envs.task import Task, UserScenario
from apigen_envs.testing import assert_domain_ok, check_domain


def test_mock_domain_conforms(mock_domain):
    report = assert_domain_ok(mock_domain)
    assert report.tasks_checked == 5 and len(report.oracle_passed) == 5 and not report.noop_passed


def test_check_domain_reports_trivial_and_broken_tasks(mock_domain):
    trivial = Task(id="trivial", domain="mock", scenario=UserScenario(instruction="Say hi."))
    broken = Task.model_validate(
        {
            "id": "broken",
            "domain": "mock",
            "scenario": {"instruction": "x"},
            "actions": [{"name": "transfer_funds", "arguments": {"from_account_id": "acc_2001"}}],
        }
    )
    domain = Domain("mock", mock_domain.snapshot, mock_domain.tools, "p", {t.id: t for t in (trivial, broken)})
    report = check_domain(domain, run_env_checker=False)
    assert not report.ok
    assert any("do-nothing agent passes" in p for p in report.problems)
    assert any("broken" in p and "Field required" in p for p in report.problems)
    with pytest.raises(AssertionError, match="does not conform"):
        assert_domain_ok(domain, run_env_checker=False)
