"""Tools and the registry that holds them.

A `Tool` is a name, a description, a JSON schema for its arguments and,
when it can run here, the Python function behind it. A `Registry` collects
tools from decorated functions, OpenAI `tools` JSON, BFCL function JSON, a
.json file or a .py module, and picks the relevant ones for a query.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import inspect
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import ToolError
from .schema import check_tool, function_schema, normalize

# Attribute the @tool decorator sets on a function.
MARK = "__edge_tool__"
# Enum values per parameter put into the retrieval text (long enums are lists of ids).
ENUM_WORDS = 10


def split_name(name: str) -> str:
    """"Restaurants_2_FindRestaurants" -> "Restaurants 2 Find Restaurants": words an encoder knows."""
    return re.sub(r"([a-z])([A-Z])", r"\1 \2", re.sub(r"[_.\-]+", " ", name)).strip()


@dataclass
class Tool:
    """One callable tool: what the model sees, and what runs."""

    name: str = field(metadata={"help": "Name the model calls it by."})
    description: str = field(default="", metadata={"help": "What the tool does, shown to the model."})
    parameters: dict = field(default_factory=lambda: {"type": "object", "properties": {}},
                             metadata={"help": "JSON schema (type object) of the arguments."})
    fn: Callable | None = field(default=None, repr=False, metadata={"help": "The Python function; None for schema-only tools."})
    states: Callable | None = field(default=None, repr=False, compare=False, metadata={
        "help": "(arguments, result) -> the text a final answer must contain, or None (default: edge.tools.answer.stated)."})
    template: Callable | None = field(default=None, repr=False, compare=False, metadata={
        "help": "(arguments, result) -> a one-sentence answer, used where the model's own answer is not trusted."})

    def __post_init__(self):
        self.parameters = normalize(self.parameters or {"type": "object", "properties": {}})
        self.parameters.setdefault("type", "object")
        check_tool(self.name, self.parameters)

    @property
    def properties(self) -> dict:
        return self.parameters.get("properties") or {}

    def text(self) -> str:
        """What retrieval embeds: the name split into words, the description, and
        each parameter's name, description and enum values.

        Parameter descriptions and enum values carry the words users type
        ("fahrenheit", "Bitcoin") that a tool's own description often lacks.
        """
        params = []
        for pname, sub in self.properties.items():
            sub = sub if isinstance(sub, dict) else {}
            part = pname.replace("_", " ")
            if sub.get("description"):
                part += f": {sub['description']}"
            if isinstance(sub.get("enum"), list) and sub["enum"]:
                part += " (" + ", ".join(map(str, sub["enum"][:ENUM_WORDS])) + ")"
            params.append(part)
        return f"{split_name(self.name)}: {self.description} {'; '.join(params)}".strip()

    def key(self) -> str:
        """Hash of the embedded text, the cache key of its embedding."""
        from .retrieval import text_key

        return text_key(self.text())

    def spec(self) -> dict:
        """The function part of an OpenAI tool: what prompts show."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def to_openai(self) -> dict:
        return {"type": "function", "function": self.spec()}


def tool(fn: Callable | None = None, *, name: str | None = None, description: str | None = None,
         states: Callable | None = None, template: Callable | None = None):
    """Decorator: mark a function as a tool (schema from its hints and docstring).

    `states(arguments, result)` gives the text an answer must contain and
    `template(arguments, result)` a sentence to answer with (see edge.tools.answer).

        @tool
        def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
            '''Current weather of a city.

            Args:
                city: City name, e.g. Paris.
            '''
    """
    def wrap(f: Callable) -> Callable:
        t = from_function(f, name=name, description=description)
        t.states, t.template = states, template
        setattr(f, MARK, t)
        return f

    return wrap(fn) if fn is not None else wrap


def from_function(fn: Callable, name: str | None = None, description: str | None = None) -> Tool:
    if not callable(fn):
        raise ToolError(f"{fn!r} is not a function.", "Register functions or tool dicts.")
    summary, params = function_schema(fn)
    return Tool(name or fn.__name__, description if description is not None else summary, params, fn)


def from_dict(d: Any) -> Tool:
    """A tool from one OpenAI (`{"type": "function", "function": {...}}`) or bare/BFCL dict."""
    if not isinstance(d, dict):
        raise ToolError(f"A tool must be a JSON object (got {type(d).__name__}).",
                        'Use {"name": ..., "description": ..., "parameters": {...}}.')
    spec = d.get("function") if isinstance(d.get("function"), dict) else d
    if "name" not in spec:
        raise ToolError(f"A tool has no name: {json.dumps(d)[:80]}.", 'Add "name" to every tool.')
    params = spec.get("parameters", spec.get("input_schema", {"type": "object", "properties": {}}))
    return Tool(spec["name"], str(spec.get("description", "")), copy.deepcopy(params))


class Registry:
    """Any number of tools by name, with retrieval of the relevant ones.

        reg = Registry.from_openai(tools)
        reg.retrieve("what's the weather in Paris", k=3)   # names, best first
    """

    def __init__(self, tools: Iterable[Tool | Callable | dict] = ()):
        self._tools: dict[str, Tool] = {}
        self._retriever = None
        for t in tools:
            self.add(t)

    # -- building ------------------------------------------------------------------
    def add(self, item: Tool | Callable | dict) -> Tool:
        if isinstance(item, Tool):
            t = item
        elif isinstance(item, dict):
            t = from_dict(item)
        elif callable(item):
            t = getattr(item, MARK, None) or from_function(item)
        else:
            raise ToolError(f"Cannot register {item!r} as a tool.", "Pass a function, a Tool or a tool dict.")
        self._tools[t.name] = t
        self._retriever = None
        return t

    def register(self, fn: Callable | None = None, **kw):
        """Decorator form of `add`: `@registry.register` or `@registry.register(name=...)`."""
        def wrap(f):
            self.add(from_function(f, **kw) if kw else (getattr(f, MARK, None) or from_function(f)))
            return f

        return wrap(fn) if fn is not None else wrap

    @classmethod
    def from_openai(cls, tools: list) -> "Registry":
        """From a list of OpenAI-format tool dicts."""
        if isinstance(tools, dict) and "tools" in tools:
            tools = tools["tools"]
        if not isinstance(tools, list):
            raise ToolError("Tools must be a JSON list of tool objects.", 'Use [{"type": "function", "function": {...}}, ...].')
        return cls(tools)

    @classmethod
    def from_bfcl(cls, functions: list) -> "Registry":
        """From BFCL's function list (types like "dict" and "float" are mapped)."""
        return cls.from_openai(functions)

    @classmethod
    def from_functions(cls, *fns: Callable) -> "Registry":
        return cls(fns)

    @classmethod
    def from_module(cls, module) -> "Registry":
        """Tools of a module: its @tool functions, else every public function it defines."""
        marked = [f for _, f in inspect.getmembers(module, callable) if hasattr(f, MARK)]
        if marked:
            return cls(marked)
        own = [f for n, f in inspect.getmembers(module, inspect.isfunction)
               if not n.startswith("_") and f.__module__ == module.__name__]
        if not own:
            raise ToolError(f"{getattr(module, '__file__', module.__name__)} defines no tools.",
                            "Decorate functions with @edge.tools.tool or define public functions.")
        return cls(own)

    @classmethod
    def load(cls, path: str | Path) -> "Registry":
        """From a .json file (OpenAI or BFCL list) or a .py module."""
        p = Path(path)
        if not p.is_file():
            raise ToolError(f"Tools file {p} does not exist.", "Pass a .json tools list or a .py module.")
        if p.suffix == ".py":
            return cls.from_module(_import_file(p))
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ToolError(f"{p} is not valid JSON: {exc}.", "Fix the file or pass a .py module of tools.") from None
        if isinstance(data, dict) and "name" in data:
            data = [data]
        return cls.from_openai(data)

    # -- access --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolError(f"No tool named '{name}'.", f"Registered tools: {', '.join(self._tools) or 'none'}.") from None

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def subset(self, names: Iterable[str]) -> list[Tool]:
        return [self._tools[n] for n in names]

    def to_openai(self) -> list[dict]:
        return [t.to_openai() for t in self]

    # -- retrieval -------------------------------------------------------------------
    @property
    def retriever(self):
        if self._retriever is None:
            from .retrieval import Retriever

            self._retriever = Retriever(list(self))
        return self._retriever

    def retrieve(self, query: str, k: int = 3, threshold: float | None = None, margin: float | None = None) -> list[str]:
        """Names of the tools to keep for `query`, best first: top-k (less those more than
        `margin` below the best) plus any above threshold."""
        return [name for name, _ in self.retriever.search(query, k=k, threshold=threshold, margin=margin)]


def _import_file(path: Path):
    name = f"edge_tools_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ToolError(f"Cannot import {path}.", "Pass a Python file (.py).")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ToolError(f"Importing {path} failed: {type(exc).__name__}: {exc}.", "Fix the module so it imports cleanly.") from None
    return module
