from __future__ import annotations

from typing import Literal

import pytest

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
