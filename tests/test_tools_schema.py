"""Tool schemas: from Python functions, from OpenAI/BFCL JSON, and bad definitions."""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Annotated, Literal, Optional

import pytest

from edge.errors import ToolError
from edge.tools import Registry, Tool, tool
from edge.tools.schema import normalize, parse_docstring


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Point:
    x: float
    y: float = 0.0


def search_flights(origin: str, dest: str, passengers: int = 1, max_price: Optional[float] = None,
                   cabin: Literal["economy", "business"] = "economy", tags: list[str] = [],
                   direct: bool = False, color: Color = Color.RED,
                   note: Annotated[str, "Free text for the agent."] = "", where: Point | None = None) -> list:
    """Search flights between two airports.

    Longer explanation that is not part of the summary.

    Args:
        origin: IATA code of the departure airport.
        dest: IATA code of the arrival
            airport, continued on a second line.
        passengers: How many people travel.
    """
    return []


def test_schema_from_function_types_defaults_enums_docstring():
    t = Registry([search_flights])["search_flights"]
    assert t.description == "Search flights between two airports."
    p = t.parameters
    assert p["required"] == ["origin", "dest"]
    props = p["properties"]
    assert props["origin"] == {"type": "string", "description": "IATA code of the departure airport."}
    assert props["dest"]["description"] == "IATA code of the arrival airport, continued on a second line."
    assert props["passengers"] == {"type": "integer", "description": "How many people travel.", "default": 1}
    assert props["max_price"] == {"type": ["number", "null"], "default": None}
    assert props["cabin"] == {"enum": ["economy", "business"], "type": "string", "default": "economy"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}, "default": []}
    assert props["direct"] == {"type": "boolean", "default": False}
    assert props["color"] == {"enum": ["red", "blue"], "type": "string", "default": "red"}
    assert props["note"] == {"type": "string", "description": "Free text for the agent.", "default": ""}
    assert props["where"] == {"type": ["object", "null"], "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                              "required": ["x"], "default": None}


def test_decorator_keeps_function_and_options():
    @tool(name="ping", description="Check a host.")
    def check(host: str, count: int = 3) -> str:
        return host * count

    assert check("a", 2) == "aa"
    reg = Registry([check])
    assert reg.names == ["ping"]
    assert reg["ping"].description == "Check a host."
    assert reg["ping"].fn is check


def test_sphinx_and_numpy_docstrings():
    summary, params = parse_docstring("Do a thing.\n\n:param a: first one\n:param int b: second\n:returns: nothing")
    assert summary == "Do a thing." and params == {"a": "first one", "b": "second"}
    summary, params = parse_docstring("Sum.\n\nParameters\n----------\nx : int\n    The x.\ny : float\n    The y.\n")
    assert summary == "Sum." and params == {"x": "The x.", "y": "The y."}


def test_openai_and_bfcl_import():
    openai = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                               "required": ["city"]}}}]
    reg = Registry.from_openai(openai)
    assert reg.to_openai() == openai
    bfcl = [{"name": "math.area", "description": "Area.", "parameters": {"type": "dict", "properties": {
        "size": {"type": "float", "description": "Side."},
        "pts": {"type": "array", "items": {"type": "tuple", "items": {"type": "integer"}}},
        "anything": {"type": "any"}, "opt": {"type": "string", "optional": True}}, "required": ["size"]}}]
    t = Registry.from_bfcl(bfcl)["math.area"]
    assert t.parameters == {"type": "object", "properties": {
        "size": {"type": "number", "description": "Side."},
        "pts": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
        "anything": {}, "opt": {"type": "string"}}, "required": ["size"]}


def test_normalize_tuple_items_to_prefix_items():
    assert normalize({"type": "tuple", "items": [{"type": "int"}, {"type": "str"}]}) == {
        "type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]}


@pytest.mark.parametrize("spec, message", [
    ({"name": "bad name!", "parameters": {"type": "object"}}, "Invalid tool name 'bad name!'. Use 1-64 letters, digits, '_', '.' or '-'."),
    ({"name": "f", "parameters": {"type": "array"}}, "Tool 'f': parameters must have type 'object' (got 'array'). Wrap the arguments in an object schema."),
    ({"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "strng"}}}},
     "Tool 'f' uses unknown type 'strng'. Use one of: array, boolean, integer, null, number, object, string."),
    ({"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string", "minLength": -1}}}},
     "Tool 'f' has an invalid schema at properties/a/minLength: -1 is less than the minimum of 0. Fix the tool's parameters to be valid JSON Schema."),
    ({"description": "no name"}, 'A tool has no name: {"description": "no name"}. Add "name" to every tool.'),
])
def test_invalid_schema_clear_error(spec, message):
    with pytest.raises(ToolError) as err:
        Registry.from_openai([spec])
    assert str(err.value) == message


def test_load_files(tmp_path):
    good = tmp_path / "tools.json"
    good.write_text(json.dumps([{"name": "f", "description": "F.", "parameters": {"type": "object", "properties": {}}}]))
    assert Registry.load(good).names == ["f"]
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(ToolError, match=r"bad.json is not valid JSON: .* Fix the file or pass a .py module of tools."):
        Registry.load(bad)
    mod = tmp_path / "mytools.py"
    mod.write_text("from edge.tools import tool\n\n@tool\ndef hello(name: str) -> str:\n    '''Say hello.'''\n    return 'hi ' + name\n\n"
                   "def helper():\n    pass\n")
    reg = Registry.load(mod)
    assert reg.names == ["hello"] and reg["hello"].fn(name="x") == "hi x"
    plain = tmp_path / "plain.py"
    plain.write_text("import os\n\ndef a(x: int) -> int:\n    return x\n\ndef _private():\n    pass\n")
    assert Registry.load(plain).names == ["a"]
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ToolError, match=r"Importing .*broken.py failed: RuntimeError: boom."):
        Registry.load(broken)


def test_tool_text_and_key_change_with_content():
    a = Tool("get_weather", "Weather.", {"type": "object", "properties": {"city": {"type": "string"}}})
    b = Tool("get_weather", "Weather now.", {"type": "object", "properties": {"city": {"type": "string"}}})
    assert a.text() == "get weather: Weather. city"
    assert a.key() != b.key() and len(a.key()) == 24
    rich = Tool("Restaurants_2_FindRestaurants", "Find restaurants.", {"type": "object", "properties": {
        "city_name": {"type": "string", "description": "City, e.g. Paris"},
        "price": {"type": "string", "enum": ["cheap", "moderate"]}}})
    assert rich.text() == "Restaurants 2 Find Restaurants: Find restaurants. city name: City, e.g. Paris; price (cheap, moderate)"
