from __future__ import annotations

import pytest

from apigen_envs.db import DBView
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


# ---------------------------------------------------------------------------------------------- every check can fail
def _fresh_mock() -> Domain:
    """A mock domain of its own (rows not shared with the cached one, so a test may spoil them)."""
    from apigen_envs.domains.mock import load

    return load()


def _with(domain: Domain, *, tasks: list[Task] | None = None, tools: object = None, snapshot: object = None) -> Domain:
    return Domain(
        domain.name,
        snapshot or domain.snapshot,  # type: ignore[arg-type]
        tools or domain.tools,  # type: ignore[arg-type]
        domain.policy,
        {t.id: t for t in tasks} if tasks is not None else dict(domain.tasks),
    )


def _task(task_id: str, *actions: tuple[str, dict[str, object]]) -> Task:
    return Task.model_validate(
        {
            "id": task_id,
            "domain": "mock",
            "scenario": {"instruction": "You are Ana Silva (ana@example.com)."},
            "actions": [{"name": name, "arguments": args} for name, args in actions],
        }
    )


def _schema_not_json(domain: Domain) -> Domain:
    import dataclasses

    from apigen_envs.tools import ToolSet

    tools = [
        dataclasses.replace(t, schema={**t.schema, "x-extra": {1, 2}}) if t.name == "think" else t for t in domain.tools
    ]
    return _with(domain, tools=ToolSet(tools))


def _no_description(domain: Domain) -> Domain:
    import dataclasses

    from apigen_envs.tools import ToolSet

    def strip(t):  # type: ignore[no-untyped-def]
        return dataclasses.replace(t, schema={**t.schema, "function": {**t.schema["function"], "description": ""}})

    return _with(domain, tools=ToolSet([strip(t) if t.name == "think" else t for t in domain.tools]))


def _rows_not_json(domain: Domain) -> Domain:
    from apigen_envs.db import IndexSpec, Snapshot

    class Note:  # a Python object, not a JSON row
        note_id = "n1"

    tables = {**domain.snapshot.tables, "notes": {"n1": Note()}}
    email = IndexSpec("customers", "email", lambda c: c["email"].lower())
    return _with(domain, snapshot=Snapshot(tables, (email,)))


def _gold_action_errors(domain: Domain) -> Domain:
    errors = _task(
        "errors", ("transfer_funds", {"from_account_id": "acc_1001", "to_account_id": "acc_1002", "amount": -5})
    )
    return _with(domain, tasks=[errors])


def _oracle_fails(domain: Domain) -> Domain:
    # The first gold action ends the episode, so the oracle never makes the transfer the gold replay makes.
    hang_up_first = _task(
        "hang_up_first",
        ("transfer_to_human_agents", {"summary": "wants a transfer"}),
        ("transfer_funds", {"from_account_id": "acc_1001", "to_account_id": "acc_1002", "amount": 5}),
    )
    return _with(domain, tasks=[hang_up_first])


def _snapshot_written(domain: Domain) -> Domain:
    from apigen_envs.domains.mock.tools import build_tools

    tools = build_tools()

    @tools.tool
    def peek_account(db: DBView, account_id: str) -> str:
        """Look at an account (a buggy tool that writes to the shared snapshot).

        Args:
            account_id: The account id.

        """
        row = db.accounts.get(account_id)
        row["nickname"] = "spoilt"  # writes to the shared row instead of calling edit(): a bug
        return "ok"

    task = _task(
        "peek",
        ("peek_account", {"account_id": "acc_1001"}),
        ("set_account_nickname", {"account_id": "acc_1002", "nickname": "x"}),
    )
    return _with(domain, tools=tools, tasks=[task])


BROKEN = {
    "schema is not JSON": _schema_not_json,
    "no description": _no_description,
    "rows must be plain JSON objects": _rows_not_json,
    "errors when replayed": _gold_action_errors,
    "the oracle does not pass it": _oracle_fails,
    "the shared snapshot changed": _snapshot_written,
}


@pytest.mark.parametrize("problem", sorted(BROKEN))
def test_each_check_can_fail(problem: str) -> None:
    base = _fresh_mock()
    assert check_domain(base, run_env_checker=False).ok
    report = check_domain(BROKEN[problem](base), run_env_checker=False)
    assert any(problem in p for p in report.problems), report.problems


def test_a_gold_error_is_a_problem_not_only_listed() -> None:
    report = check_domain(_gold_action_errors(_fresh_mock()), run_env_checker=False)
    assert report.gold_errors == {"errors": ["Error: amount must be positive"]}
    assert any("gold action 0" in p and "amount must be positive" in p for p in report.problems)


def test_the_env_checker_failure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    import gymnasium.utils.env_checker as checker

    def failing(env: object, **kwargs: object) -> None:
        raise AssertionError("observation is not in the space")

    monkeypatch.setattr(checker, "check_env", failing)
    report = check_domain(_fresh_mock(), task_ids=["nickname"])
    assert report.problems == ["gymnasium check_env failed: observation is not in the space"]
