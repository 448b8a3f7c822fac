"""The calculator gives what the peers' ``eval`` gives, on both of its paths (compiled code and tree walk)."""

from __future__ import annotations

import ast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apigen_envs.calculator import ALLOWED_CHARACTERS, PowerTooLargeError, _walk, calculate, evaluate

# "(1)(2)" compiles with a SyntaxWarning ("perhaps you missed a comma?"), as it does under eval.
pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning")

_TEXT = st.text(alphabet=sorted(ALLOWED_CHARACTERS), max_size=24)


def _peer(expression: str) -> tuple[str, str]:
    """What tau-bench's tool computes: ``round(float(eval(...)), 2)``, or the error's type and message."""
    try:
        return "ok", str(round(float(eval(expression, {"__builtins__": None}, {})), 2))  # noqa: S307
    except Exception as exc:  # noqa: BLE001 - the error itself is the expected answer
        return type(exc).__name__, str(exc)


def _ours(expression: str) -> tuple[str, str]:
    try:
        return "ok", calculate(expression)
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__, str(exc)


@settings(max_examples=3000, deadline=None)
@given(_TEXT.filter(lambda text: "**" not in text))
def test_same_value_or_error_as_eval(expression):
    assert _ours(expression) == _peer(expression)


@settings(max_examples=1000, deadline=None)
@given(_TEXT.filter(lambda text: "**" not in text))
def test_the_tree_walk_agrees_with_the_compiled_path(expression):
    source = expression.lstrip(" \t")
    try:
        fast = ("ok", evaluate(expression))
    except Exception as exc:  # noqa: BLE001
        fast = (type(exc).__name__, str(exc))
    if fast[0] != "ok":
        return  # errors come from compile(), shared by both paths
    try:
        tree = ("ok", _walk(compile(source, "<string>", "eval", ast.PyCF_ONLY_AST)))
    except SyntaxError as exc:  # a call such as "(1)(2)": the walk refuses, eval raises TypeError at run time
        assert "unsupported expression element" in str(exc)
        return
    assert tree == fast


@pytest.mark.parametrize("expression", ["2 ** 10", "2**0.5", "(1+1)**3", "-2 ** 2", "4 ** -1", "0 ** 0"])
def test_powers_take_the_guarded_path_and_match_eval(expression):
    assert _ours(expression) == _peer(expression)


def test_a_huge_power_is_refused_instead_of_computed():
    with pytest.raises(PowerTooLargeError):
        evaluate("9**9**9")


def test_text_outside_the_character_set_is_never_run():
    # The tools check the character set with their own message; evaluate() refuses such text itself too.
    with pytest.raises(ValueError, match="only digits"):
        evaluate("'a' * 99999999999")
    with pytest.raises(ValueError, match="only digits"):
        evaluate("x + 1")
