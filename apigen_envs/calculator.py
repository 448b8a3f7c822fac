"""The ``calculate`` tool's arithmetic: what Python's ``eval`` gives on the peers' character set, safely.

Both peers evaluate the expression with ``eval`` after checking that it holds only digits, ``+ - * / ( )
.`` and spaces. On that character set ``eval`` can only compute arithmetic (including ``**`` and ``//``),
build an empty tuple or an ``Ellipsis``, or fail. This module compiles the expression as ``eval`` does;
without a power (``**``) it runs the compiled code, which on this character set can only do arithmetic on
numbers as long as the text; with a power it evaluates Python's own syntax tree node by node with Python's
own operators. Either way every value, every rounding and every error message (``division by zero``,
``invalid syntax (<string>, line 1)``, ``float() argument must be ...``) is the one ``eval`` produces.

One deliberate limit: an integer power whose result would have more than :data:`MAX_POWER_BITS` bits is
refused (``eval`` would spend minutes or gigabytes on ``9**9**9``).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

ALLOWED_CHARACTERS = frozenset("0123456789+-*/(). ")
"""The characters both peers accept in an expression."""

MAX_POWER_BITS = 100_000
"""Largest integer power computed (about 30,000 decimal digits)."""

_BINARY: Mapping[type[ast.operator], Callable[[Any, Any], Any]] = MappingProxyType(
    {
        ast.Add: operator.add,
        ast.Sub: operator.sub,
        ast.Mult: operator.mul,
        ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv,
        ast.Pow: operator.pow,
    }
)
_UNARY: Mapping[type[ast.unaryop], Callable[[Any], Any]] = MappingProxyType(
    {ast.USub: operator.neg, ast.UAdd: operator.pos}
)


class PowerTooLargeError(ArithmeticError):
    """An integer power too large to compute."""


def _power(base: Any, exponent: Any) -> Any:
    big = isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1
    if big and exponent * abs(base).bit_length() > MAX_POWER_BITS:
        raise PowerTooLargeError("the result of the power is too large to compute")
    return operator.pow(base, exponent)


def _walk(root: ast.AST) -> Any:
    # Iterative post-order evaluation: whatever depth the compiler accepts (it is bounded by the C stack, not
    # by the interpreter's recursion limit) is evaluated without recursion.
    stack: list[tuple[ast.AST, bool]] = [(root, False)]
    values: list[Any] = []
    while stack:
        node, expanded = stack.pop()
        if isinstance(node, ast.Expression):
            stack.append((node.body, False))
        elif isinstance(node, ast.Constant):
            values.append(node.value)
        elif isinstance(node, ast.Tuple):
            if node.elts:  # unreachable without a comma; refused rather than evaluated
                raise SyntaxError("unsupported expression element Tuple")
            values.append(())
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            if expanded:
                right, left = values.pop(), values.pop()
                if isinstance(node.op, ast.Pow):
                    values.append(_power(left, right))
                else:
                    values.append(_BINARY[type(node.op)](left, right))
            else:
                stack.extend([(node, True), (node.right, False), (node.left, False)])
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            if expanded:
                values.append(_UNARY[type(node.op)](values.pop()))
            else:
                stack.extend([(node, True), (node.operand, False)])
        else:
            # Unreachable from the allowed characters; refused rather than evaluated.
            raise SyntaxError(f"unsupported expression element {type(node).__name__}")
    return values[0]


def evaluate(expression: str) -> Any:
    """Evaluate an expression made of :data:`ALLOWED_CHARACTERS` exactly as ``eval`` would.

    Args:
        expression: The expression (callers check the character set first, with their own message).

    Returns:
        The value ``eval`` gives (an int, float or complex number, ``()`` or ``Ellipsis``).

    Raises:
        SyntaxError: For text that is not an expression (``eval``'s message, ``<string>`` included).
        ZeroDivisionError, OverflowError, TypeError, MemoryError, RecursionError: As ``eval`` raises them.
        PowerTooLargeError: For an integer power beyond :data:`MAX_POWER_BITS`.
        ValueError: For a character outside :data:`ALLOWED_CHARACTERS`.

    """
    if not ALLOWED_CHARACTERS.issuperset(expression):
        # The tools check first, with their own message; this keeps any other caller from computing text.
        raise ValueError("the expression may hold only digits, + - * / ( ) . and spaces")
    # eval() strips leading spaces and tabs from a string before compiling it; ast.parse does not.
    source = expression.lstrip(" \t")
    # Compiling (never running) the code first gives eval's own errors for text that is not an expression,
    # down to the wording of its recursion errors; CPython bounds the constant folding it does meanwhile.
    code = compile(source, "<string>", "eval")
    if "**" not in source and not code.co_names:
        # Without a power, this character set cannot make a computation costlier than the text is long, and
        # it cannot name anything (no letters): running the compiled code is eval itself, at eval's speed.
        return eval(code, {"__builtins__": {}}, {})  # noqa: S307 - the character set is checked above
    return _walk(compile(source, "<string>", "eval", ast.PyCF_ONLY_AST))


def calculate(expression: str) -> str:
    """The peers' ``calculate`` result: the value as a float rounded to two decimals, as text.

    Args:
        expression: The expression.

    Returns:
        ``str(round(float(value), 2))``.

    Raises:
        Exception: Whatever :func:`evaluate` or ``float()`` raises (the peers show ``Error: <message>``).

    """
    return str(round(float(evaluate(expression)), 2))
