from __future__ import annotations

import json
import os
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError

from apigen_envs.db import DBView
from apigen_envs.errors import ToolCallError
from apigen_envs.tools import ToolDefinitionError, ToolSet, parse_arguments, parse_docstring


def make_tools() -> ToolSet:
    tools = ToolSet()

    @tools.tool(mutates=True)
    def set_color(db: DBView, item_id: str, color: Literal["red", "blue"], count: int = 1) -> str:
        """Paint an item.

        Longer explanation on a second paragraph.

        Args:
            item_id: The item to paint,
                spanning two lines.
            color: The new color.
            count: How many coats.

        Returns:
            A confirmation.
        """
        return f"{item_id}:{color}:{count}"

    return tools


def test_schema_from_signature_and_docstring():
    schema = make_tools().schemas()[0]
    fn = schema["function"]
    assert schema["type"] == "function"
    assert fn["name"] == "set_color"
    assert fn["description"] == "Paint an item. Longer explanation on a second paragraph."
    props = fn["parameters"]["properties"]
    assert props["color"]["enum"] == ["red", "blue"]
    assert props["item_id"]["description"] == "The item to paint, spanning two lines."
    assert props["count"]["type"] == "integer" and props["count"]["default"] == 1
    assert fn["parameters"]["required"] == ["item_id", "color"]
    assert "title" not in str(schema)


def test_tool_flags_and_call():
    tools = make_tools()
    assert tools["set_color"].mutates and not tools["set_color"].terminal
    assert tools.call(None, "set_color", {"item_id": "a", "color": "red"}) == "a:red:1"
    assert tools.call(None, "set_color", '{"item_id": "a", "color": "blue", "count": 2}') == "a:blue:2"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"item_id": "a"}, "color: Field required"),
        ({"item_id": "a", "color": "green"}, "color: Input should be 'red' or 'blue'"),
        ({"item_id": "a", "color": "red", "count": "many"}, "count: Input should be a valid integer"),
        ({"item_id": "a", "color": "red", "size": 3}, "size: Extra inputs are not permitted"),
        ({"item_id": 5, "color": "red"}, "item_id: Input should be a valid string"),
        ('{"item_id": ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_invalid_arguments_are_call_errors(arguments, message):
    with pytest.raises(ToolCallError, match=message):
        make_tools().call(None, "set_color", arguments)


def test_unknown_tool_did_you_mean():
    with pytest.raises(ToolCallError, match="Did you mean 'set_color'"):
        make_tools().call(None, "set_colour", {})


def test_registration_refuses_undocumented_parameter():
    tools = ToolSet()
    with pytest.raises(ToolDefinitionError, match="'b' has no description"):

        @tools.tool
        def f(db: DBView, a: int, b: int) -> int:
            """Add.

            Args:
                a: First.
            """
            return a + b


def test_registration_refuses_missing_hint_duplicate_and_no_docstring():
    tools = ToolSet()
    with pytest.raises(ToolDefinitionError, match="no type hint"):

        @tools.tool
        def g(db, a):  # type: ignore[no-untyped-def]
            """Do.

            Args:
                a: A.
            """

    with pytest.raises(ToolDefinitionError, match="no description"):

        @tools.tool
        def h(db: DBView) -> None:
            pass

    make = make_tools()
    with pytest.raises(ToolDefinitionError, match="duplicate"):
        make.add(make["set_color"])


def test_parse_helpers():
    assert parse_arguments(None) == {}
    assert parse_arguments("  ") == {}
    with pytest.raises(ToolCallError):
        parse_arguments(42)  # type: ignore[arg-type]
    desc, params = parse_docstring("Summary.\n\nArgs:\n    x (int): The x.\n    y: The y.\n")
    assert desc == "Summary." and params == {"x": "The x.", "y": "The y."}


# ---------------------------------------------------------------------------------------------- fast validation
class Leg(BaseModel):
    number: str = Field(description="A number.")
    price: float = Field(description="A price.")


def _typed_tool():
    tools = ToolSet()

    @tools.tool
    def typed(
        db: DBView,
        name: str,
        count: int,
        ratio: float,
        flag: bool,
        cabin: Literal["economy", "business"],
        ids: list[str],
        legs: list[Leg],
        note: str | None = None,
        limit: int = 3,
    ) -> str:
        """A tool with one parameter of every kind the fast path handles.

        Args:
            name: A str.
            count: An int.
            ratio: A float.
            flag: A bool.
            cabin: A literal.
            ids: Strings.
            legs: Records.
            note: An optional str (not a fast type: the whole call goes through pydantic).
            limit: An int with a default.
        """
        return ""

    @tools.tool
    def plain(
        db: DBView,
        name: str,
        count: int,
        ratio: float,
        flag: bool,
        cabin: Literal["economy", "business"],
        ids: list[str],
        legs: list[Leg],
        limit: int = 3,
    ) -> str:
        """Only fast types.

        Args:
            name: A str.
            count: An int.
            ratio: A float.
            flag: A bool.
            cabin: A literal.
            ids: Strings.
            legs: Records.
            limit: An int with a default.
        """
        return ""

    return tools


_TYPED = _typed_tool()
_ANY = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats() | st.sampled_from(["economy", "x", "1"]),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from(["number", "price", "other"]), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=int(os.environ.get("APIGEN_FAST_EXAMPLES", "300")), deadline=None)
@given(
    arguments=st.fixed_dictionaries(
        {
            "name": st.text(max_size=3) | _ANY,
            "count": st.integers(-(2**70), 2**70) | _ANY,
            "ratio": st.floats() | st.integers(-(2**60), 2**60) | _ANY,
            "flag": st.booleans() | _ANY,
            "cabin": st.sampled_from(["economy", "business", "first"]) | _ANY,
            "ids": st.lists(st.text(max_size=2), max_size=2) | _ANY,
            "legs": st.lists(
                st.fixed_dictionaries({"number": st.text(max_size=2), "price": st.floats() | st.integers()}), max_size=2
            )
            | _ANY,
        },
        optional={"limit": st.integers() | _ANY, "extra": _ANY},
    ).flatmap(
        lambda args: st.sets(st.sampled_from(sorted(args)), max_size=1).map(
            lambda drop: {k: v for k, v in args.items() if k not in drop}
        )
    )
)
def test_fast_validation_gives_what_pydantic_gives(arguments):
    tool = _TYPED["plain"]
    assert tool._fast is not None
    try:
        expected = tool.args_model.model_validate(arguments).model_dump()
    except ValidationError:
        expected = None
    try:
        got = tool.validate(arguments)
    except ToolCallError:
        got = None
    assert got == expected
    if got is not None:  # same types too (1 and 1.0 are equal in Python, not in JSON)
        assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_tools_with_other_types_always_validate_through_pydantic():
    assert _TYPED["typed"]._fast is None
