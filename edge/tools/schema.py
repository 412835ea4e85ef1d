"""JSON schemas for tools: from Python functions, and normalised from other dialects.

`function_schema` reads a function's type hints, defaults and docstring
(Google, Sphinx or NumPy style) into a JSON schema for its parameters.
`normalize` turns BFCL's dialect ("dict", "float", "tuple", "any",
"optional") into standard JSON Schema; `check_tool` rejects a definition
that cannot be used, with a message that says what to fix.
"""
from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import types
import typing
from typing import Any, Callable

from ..errors import ToolError

# Tool names as OpenAI and BFCL accept them (BFCL uses dots: "math.factorial").
NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

# BFCL and other dialects -> JSON Schema type names.
TYPE_ALIASES = {"dict": "object", "float": "number", "tuple": "array", "int": "integer",
                "str": "string", "bool": "boolean", "list": "array", "double": "number",
                "long": "integer", "char": "string", "byte": "integer", "short": "integer",
                "hashmap": "object", "arraylist": "array", "bigint": "integer"}
JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
# Types that mean "anything": the key is dropped.
ANY_TYPES = {"any", "anytype", "object?"}
# Keys of some dialects that are not JSON Schema and confuse validators.
DROP_KEYS = {"optional"}
# Keys holding one subschema / a list of subschemas / a map of subschemas.
SUB_ONE = ("items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else")
SUB_LIST = ("anyOf", "oneOf", "allOf", "prefixItems")
SUB_MAP = ("properties", "patternProperties", "$defs", "definitions")

PY_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


# -- dialects ------------------------------------------------------------------
def normalize(schema: Any) -> Any:
    """A copy of `schema` in standard JSON Schema (BFCL's type names mapped)."""
    if isinstance(schema, list):
        return [normalize(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict = {}
    for key, value in schema.items():
        if key in DROP_KEYS:
            continue
        if key == "type":
            value = _norm_type(value)
            if value is None:
                continue
        elif key in SUB_ONE and isinstance(value, dict):
            value = normalize(value)
        elif key == "items" and isinstance(value, list):
            value = [normalize(v) for v in value]
        elif key in SUB_LIST and isinstance(value, list):
            value = [normalize(v) for v in value]
        elif key in SUB_MAP and isinstance(value, dict):
            value = {k: normalize(v) for k, v in value.items()}
        out[key] = value
    if out.get("type") == "array" and isinstance(out.get("items"), list):
        # Draft 4 tuple form -> 2020-12.
        out["prefixItems"] = out.pop("items")
    return out


def _norm_type(value):
    if isinstance(value, list):
        mapped = [_norm_type(v) for v in value]
        return None if any(m is None for m in mapped) else mapped
    if not isinstance(value, str):
        return value
    low = value.strip().lower()
    if low in ANY_TYPES:
        return None
    return TYPE_ALIASES.get(low, low)


# -- checks ---------------------------------------------------------------------
def check_tool(name: Any, parameters: Any) -> None:
    """Raise ToolError unless `name` and `parameters` make a usable tool."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ToolError(f"Invalid tool name {name!r}.",
                        "Use 1-64 letters, digits, '_', '.' or '-'.")
    if not isinstance(parameters, dict):
        raise ToolError(f"Tool '{name}': parameters must be a JSON object schema (got {type(parameters).__name__}).",
                        'Give "parameters": {"type": "object", "properties": {...}}.')
    if parameters.get("type", "object") != "object":
        raise ToolError(f"Tool '{name}': parameters must have type 'object' (got {parameters.get('type')!r}).",
                        "Wrap the arguments in an object schema.")
    _check_types(name, parameters)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "parameters"
        raise ToolError(f"Tool '{name}' has an invalid schema at {where}: {exc.message}.",
                        "Fix the tool's parameters to be valid JSON Schema.") from None
    props = parameters.get("properties") or {}
    missing = [r for r in parameters.get("required", []) if r not in props]
    if missing and parameters.get("additionalProperties") is False:
        raise ToolError(f"Tool '{name}' requires {', '.join(missing)} but does not define them.",
                        "Add them to 'properties' or remove them from 'required'.")


def _check_types(name: str, schema: Any) -> None:
    if isinstance(schema, list):
        for s in schema:
            _check_types(name, s)
        return
    if not isinstance(schema, dict):
        return
    t = schema.get("type")
    for one in (t if isinstance(t, list) else [t] if t is not None else []):
        if one not in JSON_TYPES:
            raise ToolError(f"Tool '{name}' uses unknown type {one!r}.",
                            f"Use one of: {', '.join(sorted(JSON_TYPES))}.")
    for key in SUB_ONE + SUB_LIST:
        if key in schema:
            _check_types(name, schema[key])
    for key in SUB_MAP:
        if isinstance(schema.get(key), dict):
            for sub in schema[key].values():
                _check_types(name, sub)


# -- Python functions -------------------------------------------------------------
def function_schema(fn: Callable) -> tuple[str, dict]:
    """(description, parameters schema) of a Python function."""
    doc = inspect.getdoc(fn) or ""
    summary, param_docs = parse_docstring(doc)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # unresolvable forward references
        raise ToolError(f"Cannot read the type hints of {fn.__name__}: {exc}.",
                        "Use types importable where the function is defined.") from None
    props: dict = {}
    required: list[str] = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("self", "cls"):
            continue
        ann = hints.get(p.name, p.annotation)
        sub = type_schema(ann) if ann is not inspect.Parameter.empty else {}
        if p.name in param_docs and "description" not in sub:
            sub["description"] = param_docs[p.name]
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
        else:
            default = _jsonable(p.default)
            if default is not _NO:
                sub["default"] = default
        props[p.name] = sub
    params = {"type": "object", "properties": props, "required": required}
    return summary, params


_NO = object()


def _jsonable(value):
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_jsonable(v) for v in value]
        return _NO if any(i is _NO for i in items) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _jsonable(v) for k, v in value.items()}
        return _NO if any(i is _NO for i in items.values()) else items
    return _NO


def type_schema(tp: Any) -> dict:
    """JSON schema of one Python type annotation."""
    if tp is Any or tp is inspect.Parameter.empty:
        return {}
    if isinstance(tp, str):
        return {"type": TYPE_ALIASES.get(tp.lower(), tp.lower())} if tp.lower() in TYPE_ALIASES or tp.lower() in JSON_TYPES else {}
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        sub = type_schema(args[0])
        texts = [a for a in args[1:] if isinstance(a, str)]
        if texts:
            sub["description"] = texts[0]
        for extra in args[1:]:
            if isinstance(extra, dict):  # schema keywords: Annotated[str, {"pattern": "^[0-9]+$"}]
                sub.update(extra)
        return sub
    if origin is typing.Literal:
        values = [_jsonable(a) for a in args]
        kinds = {PY_TYPES.get(type(v)) for v in values}
        out = {"enum": values}
        if len(kinds) == 1 and None not in kinds:
            out["type"] = kinds.pop()
        return out
    if origin in (typing.Union, types.UnionType):
        subs = [type_schema(a) for a in args if a is not type(None)]
        nullable = type(None) in args
        if len(subs) == 1:
            sub = subs[0]
            if nullable and "type" in sub and isinstance(sub["type"], str):
                sub = dict(sub, type=[sub["type"], "null"])
            elif nullable:
                sub = {"anyOf": [sub, {"type": "null"}]}
            return sub
        return {"anyOf": subs + ([{"type": "null"}] if nullable else [])}
    if tp in PY_TYPES:
        return {"type": PY_TYPES[tp]}
    if inspect.isclass(tp) and issubclass(tp, enum.Enum):
        values = [_jsonable(m.value) for m in tp]
        kinds = {PY_TYPES.get(type(v)) for v in values}
        out = {"enum": values}
        if len(kinds) == 1 and None not in kinds:
            out["type"] = kinds.pop()
        return out
    if origin in (list, set, frozenset, typing.Sequence, typing.List) or tp in (list, set, frozenset):
        out = {"type": "array"}
        if args:
            out["items"] = type_schema(args[0])
        if origin in (set, frozenset) or tp in (set, frozenset):
            out["uniqueItems"] = True
        return out
    if origin is tuple or tp is tuple:
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            return {"type": "array", "prefixItems": [type_schema(a) for a in args],
                    "minItems": len(args), "maxItems": len(args)}
        return {"type": "array", "items": type_schema(args[0])} if args else {"type": "array"}
    if origin in (dict, typing.Mapping) or tp is dict:
        out = {"type": "object"}
        if len(args) == 2:
            out["additionalProperties"] = type_schema(args[1])
        return out
    if dataclasses.is_dataclass(tp) or _is_typeddict(tp):
        return _class_schema(tp)
    raise ToolError(f"Cannot turn the type {tp!r} into a JSON schema.",
                    "Use str, int, float, bool, list, dict, Literal, Enum, Optional, a dataclass or TypedDict.")


def _is_typeddict(tp) -> bool:
    return inspect.isclass(tp) and issubclass(tp, dict) and hasattr(tp, "__annotations__") and hasattr(tp, "__total__")


def _class_schema(tp) -> dict:
    hints = typing.get_type_hints(tp, include_extras=True)
    props = {k: type_schema(v) for k, v in hints.items()}
    if dataclasses.is_dataclass(tp):
        required = [f.name for f in dataclasses.fields(tp)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    else:
        required = sorted(getattr(tp, "__required_keys__", hints))
    out = {"type": "object", "properties": props, "required": [r for r in props if r in required]}
    _, docs = parse_docstring(inspect.getdoc(tp) or "")
    for k, text in docs.items():
        if k in props:
            props[k].setdefault("description", text)
    return out


# -- docstrings ------------------------------------------------------------------
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Returns|Return|Raises|Yields|Examples?|Notes?|Attributes)\s*:?\s*$")
_GOOGLE_ARG = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_ARG = re.compile(r"^:param\s+(?:[\w\[\], ]+\s+)?(\w+)\s*:\s*(.*)$")
_NUMPY_ARG = re.compile(r"^(\w+)\s*:\s*.*$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(summary, {param: description}) from a Google, Sphinx or NumPy docstring."""
    lines = doc.expandtabs().splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section = None
    current = None
    base_indent = None
    numpy_style = False
    i = 0
    while i < len(lines):
        raw = lines[i]
        line = raw.strip()
        i += 1
        m = _SECTION.match(line)
        if m and not raw.startswith(" "):
            section = m.group(1).lower()
            current = None
            base_indent = None
            # NumPy style underlines the header with dashes.
            if i < len(lines) and set(lines[i].strip()) == {"-"}:
                numpy_style = True
                i += 1
            continue
        sm = _SPHINX_ARG.match(line)
        if sm:
            current = sm.group(1)
            params[current] = sm.group(2).strip()
            section = "sphinx"
            continue
        if line.startswith(":"):
            current = None
            section = "sphinx"
            continue
        if section is None:
            if not line and summary:
                section = "body"
            elif line:
                summary.append(line)
            continue
        if section in ("args", "arguments", "parameters", "params"):
            if not line:
                continue
            indent = len(raw) - len(raw.lstrip())
            if base_indent is None:
                base_indent = indent
            if indent <= base_indent:
                gm = None if numpy_style else _GOOGLE_ARG.match(line)
                if gm:
                    current = gm.group(1).lstrip("*")
                    params[current] = gm.group(3).strip()
                    continue
                nm = _NUMPY_ARG.match(line) or re.match(r"^(\w+)\s*$", line)
                if nm:
                    current = nm.group(1)
                    params[current] = ""
                    continue
            if current:
                params[current] = (params[current] + " " + line).strip()
        elif section == "sphinx" and current and line:
            params[current] = (params[current] + " " + line).strip()
    return " ".join(summary), params
