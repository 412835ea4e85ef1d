"""The assistant's starter set of safe local tools.

Each tool is a plain typed function with a docstring, so edge.tools can turn
it into a JSON schema. None of them runs a shell, touches the network or
writes outside the assistant's data folder; file search never leaves the
folder the user chose. Timers, reminders and notes live in one JSON file per
kind under `$EDGE_HOME/assistant/`, written atomically.
"""
from __future__ import annotations

import ast
import json
import math
import operator
import os
import platform
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Iterator, Literal, Optional

from edge.errors import ToolError
from edge.tools import tool


@dataclass
class Settings:
    """Where the tools keep their data and which folder file search may read."""

    data_dir: Optional[Path] = None    # default: $EDGE_HOME/assistant
    files_root: Optional[Path] = None  # file search is refused until this is set
    include_hidden: bool = False       # dotfiles (.env, .ssh) hold secrets: searched only when the user asks


_settings = Settings()


def configure(data_dir: str | Path | None = None, files_root: str | Path | None = None,
              include_hidden: bool = False) -> Settings:
    """Point the tools at a data folder and a folder for file search (hidden files only when asked)."""
    global _settings
    _settings = Settings(Path(data_dir).expanduser() if data_dir else None,
                         Path(files_root).expanduser().resolve() if files_root else None, include_hidden)
    if _settings.files_root is not None and not _settings.files_root.is_dir():
        raise ToolError(f"{files_root} is not a folder.", "Pass an existing folder to search in.")
    return _settings


def data_dir() -> Path:
    if _settings.data_dir is not None:
        return _settings.data_dir
    from edge.store import home

    return home() / "assistant"


# -- the JSON files --------------------------------------------------------------
@contextmanager
def _locked(kind: str) -> Iterator[None]:
    """Hold an exclusive lock on one kind's file across load and save.

    Without it, two processes (or the timer thread and a turn) that add at the same
    time both load the old list and the later save drops the other's item.
    """
    import fcntl

    folder = data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{kind}.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _load(kind: str) -> list[dict]:
    path = data_dir() / f"{kind}.json"
    if not path.exists():
        return []
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        # Never overwrite a file we cannot read: the user may want its contents.
        raise ToolError(f"{path} is not valid JSON ({exc.__class__.__name__}).", "Fix or move that file; the assistant left it untouched.")
    if not isinstance(items, list):
        raise ToolError(f"{path} should hold a JSON list.", "Fix or move that file; the assistant left it untouched.")
    return items


def _save(kind: str, items: list[dict]) -> None:
    from edge.fsutil import atomic_write

    text = json.dumps(items, indent=2, ensure_ascii=False) + "\n"
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ToolError(f"The {kind} file would pass {MAX_FILE_BYTES // 1000} kB.", f"Delete some {kind} first.")
    atomic_write(data_dir() / f"{kind}.json", text)


def _text(text: str, what: str, limit: int) -> str:
    """`text` stripped, or a clear error when it is empty, too long or not valid Unicode."""
    text = text.strip()
    if not text:
        raise ToolError(f"The {what} is empty.", f"Say what the {what} should say.")
    if len(text) > limit:
        raise ToolError(f"The {what} is {len(text)} characters long; at most {limit} are kept.", f"Make the {what} shorter.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolError(f"The {what} holds characters that are not valid text.", f"Type the {what} again.") from None
    return text


# A note or reminder holds at most this many characters, and each kind's file at most this
# many bytes: the answer prompt quotes them, and a small model's context is short.
MAX_NOTE_CHARS = 1000
MAX_FILE_BYTES = 256_000


def _clock(iso: str) -> str:
    """'14:05' for a time today, 'Wed 02 Dec 14:05' for another day."""
    at = datetime.fromisoformat(iso)
    return at.strftime("%H:%M") if at.date() == datetime.now(at.tzinfo).date() else at.strftime("%a %d %b %H:%M")


def _listed(items: list, what: str, show) -> str:
    """A one-line answer listing `items` (at most 10)."""
    if not items:
        return f"You have no {what}." if not what.startswith("files") else f"There are no {what}."
    shown = "; ".join(show(i) for i in items[:10])
    more = f" (and {len(items) - 10} more)" if len(items) > 10 else ""
    return f"{len(items)} {what}: {shown}{more}."


def _next_id(items: list[dict]) -> int:
    return max((int(i.get("id", 0)) for i in items), default=0) + 1


# -- time --------------------------------------------------------------------------
@tool(states=lambda a, r: r["time"], template=lambda a, r: f"It is {r['time']} on {r['date']}.")
def get_time() -> dict:
    """Get the current local time and date."""
    now = datetime.now().astimezone()
    return {"time": now.strftime("%H:%M"), "date": now.strftime("%A %d %B %Y"),
            "timezone": now.tzname(), "iso": now.isoformat(timespec="seconds")}


# "in 10 minutes", "10 minutes" or "10 minutes from now": a duration from now.
_IN = re.compile(r"^\s*(?:in\s+)?(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hrs?|hours?|d|days?)"
                 r"(?:\s+from\s+now)?\s*$", re.I)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(when: str, now: datetime | None = None) -> datetime:
    """'in 10 minutes' (or '10 minutes'), '17:30' (today, or tomorrow when past) or an ISO date-time."""
    now = now or datetime.now().astimezone()
    m = _IN.match(when)
    if m:
        return now + timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)[0].lower()])
    hm = re.match(r"^\s*(\d{1,2}):(\d{2})\s*$", when)
    if hm and int(hm.group(1)) < 24 and int(hm.group(2)) < 60:
        at = now.replace(hour=int(hm.group(1)), minute=int(hm.group(2)), second=0, microsecond=0)
        return at if at > now else at + timedelta(days=1)
    try:
        at = datetime.fromisoformat(when.strip())
    except ValueError:
        raise ToolError(f"Cannot read the time '{when}'.", "Use 'in 10 minutes', '17:30' or '2026-12-24T18:00'.")
    return at if at.tzinfo else at.astimezone()


@tool(states=lambda a, r: _clock(r["due"]),
      template=lambda a, r: f"Timer '{r['text']}' set for {a['minutes']:g} minutes; it rings at {_clock(r['due'])}.")
def set_timer(minutes: float, label: str = "timer") -> dict:
    """Start a countdown timer that rings after the given number of minutes.

    Args:
        minutes: How long the timer runs, in minutes.
        label: A short name for the timer, e.g. tea.
    """
    if not 0 < minutes <= 7 * 24 * 60:
        raise ToolError(f"A timer needs between 0 and 10080 minutes (got {minutes}).", "Ask for a shorter timer.")
    due = datetime.now().astimezone() + timedelta(minutes=minutes)
    return _add_alarm("timer", label.strip() or "timer", due)


@tool(states=lambda a, r: _clock(r["due"]), template=lambda a, r: f"I will remind you to {r['text']} at {_clock(r['due'])}.")
def add_reminder(text: str, when: str) -> dict:
    """Remember to tell the user something at a given time.

    Args:
        text: What to remind of, as the request says it.
        when: When: 'in 10 minutes', '17:30' or an ISO date-time.
    """
    return _add_alarm("reminder", _text(text, "reminder", MAX_NOTE_CHARS), parse_when(when))


def _add_alarm(kind: str, text: str, due: datetime) -> dict:
    text = _text(text, kind, MAX_NOTE_CHARS)
    with _locked("alarms"):
        items = _load("alarms")
        item = {"id": _next_id(items), "kind": kind, "text": text, "due": due.isoformat(timespec="seconds"), "done": False}
        items.append(item)
        _save("alarms", items)
    return item


@tool(template=lambda a, r: _listed(r, "timers or reminders", lambda i: f"{i['kind']} '{i['text']}' at {_clock(i['due'])}"))
def list_reminders() -> list[dict]:
    """List the timers and reminders I have: which timers are running, which reminders are coming up."""
    return sorted((i for i in _load("alarms") if not i.get("done")), key=lambda i: i["due"])


def due_alarms(now: datetime | None = None) -> list[dict]:
    """Timers and reminders whose time has come; marks them done (not a tool: the loop calls it)."""
    now = now or datetime.now().astimezone()
    with _locked("alarms"):
        items = _load("alarms")
        due = [i for i in items if not i.get("done") and datetime.fromisoformat(i["due"]) <= now]
        if due:
            for i in due:
                i["done"] = True
            _save("alarms", items)
    return due


# -- calculator ---------------------------------------------------------------------
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNOPS = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS = {"sqrt": math.sqrt, "sin": math.sin, "cos": math.cos, "tan": math.tan, "log": math.log,
          "log10": math.log10, "log2": math.log2, "exp": math.exp, "abs": abs, "round": round,
          "floor": math.floor, "ceil": math.ceil, "min": min, "max": max}
# Numbers of arguments each function takes (high None: any number).
_ARITY = {"min": (1, None), "max": (1, None), "round": (1, 2), "log": (1, 2)}
_ARITY_TEXT = {(1, None): "at least one number", (1, 2): "one or two numbers", (1, 1): "one number"}
_CONSTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
# Spoken arithmetic, as speech-to-text writes it, mapped to Python operators.
_WORDS = [(r"\bmultiplied by\b|\btimes\b|×|(?<=\d)\s*x\s*(?=\d)", "*"), (r"\bdivided by\b|\bover\b|÷", "/"),
          (r"\bplus\b", "+"), (r"\bminus\b", "-"), (r"\bsquared\b", "**2"), (r"\bcubed\b", "**3"),
          (r"\bto the power of\b|\^", "**"), (r"\bsquare root of\b", "sqrt "), (r"\bpercent of\b|% of\b", "/100*"),
          (r"(?<=\d),(?=\d{3}\b)", "")]
MAX_EXPRESSION = 200
# Words before the arithmetic starts ("what is", "the"): a spoken question copied whole
# ("what is the square root of 16"). Only a lead-in goes; a word after a number still
# fails ("5 feet in meters" is not arithmetic).
_LEAD_WORD = re.compile(r"\s*([A-Za-z]+(?:'[A-Za-z]+)?)\s+")


def _without_lead_in(text: str) -> str:
    """`text` less the words before its arithmetic, when what follows them is arithmetic."""
    pos = 0
    while (m := _LEAD_WORD.match(text, pos)) and m.group(1).lower() not in _FUNCS and m.group(1).lower() not in _CONSTS:
        pos = m.end()
    rest = text[pos:]
    starts = re.match(r"[\d(.-]|(%s)\b" % "|".join(list(_FUNCS) + list(_CONSTS)), rest, re.I)
    return rest if pos and starts else text
MAX_EXPONENT = 1000
# Largest integer result, in decimal digits (Python prints at most 4300 by default).
MAX_DIGITS = 4000
MAX_BITS = MAX_DIGITS * math.log2(10)
_SMALL = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6}
_NUMBER_WORDS = re.compile(r"\b(?:(?:%s)(?:[\s-]+(?:and[\s-]+)?(?=%s))?)+" % (
    "|".join(list(_SMALL) + list(_TENS) + list(_SCALES)), "|".join(list(_SMALL) + list(_TENS) + list(_SCALES))), re.I)


def _number(words: str) -> str:
    """'twenty-one thousand and five' -> '21005' (spoken numbers, as speech-to-text may write them)."""
    total = current = 0
    for w in re.split(r"[\s-]+", words.lower()):
        if w in _SMALL:
            current += _SMALL[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w == "hundred":
            current = max(current, 1) * 100
        elif w in _SCALES:
            total += max(current, 1) * _SCALES[w]
            current = 0
    return str(total + current)


def _bits(x) -> float:
    """Size of a number in bits, to bound a result before it is computed."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return 0.0
    if x == 0 or isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return 0.0
    return max(0.0, math.log2(abs(x)))


def _too_big(what: str) -> ToolError:
    return ToolError(f"{what} would have more than {MAX_DIGITS} digits.", "Use smaller numbers.")


def _check(node, left, right) -> None:
    """Refuse an operation whose result would be too large, before computing it.

    Big-integer arithmetic holds the interpreter lock, so a timeout cannot stop it;
    the only safe bound is one checked first. Floats overflow to an error by themselves.
    """
    op = type(node.op)
    if op is ast.Pow:
        if isinstance(left, (int, float)) and isinstance(right, (int, float)) and left < 0 and not float(right).is_integer():
            raise ToolError(f"'{ast.unparse(node)}' has no real-number result.", "Use a non-negative base for a fractional power.")
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            if _bits(left) * right > MAX_BITS:
                raise _too_big(f"'{ast.unparse(node)}'")
        elif isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT and abs(left) > 1:
            raise _too_big(f"'{ast.unparse(node)}'")
    elif op is ast.Mult and isinstance(left, int) and isinstance(right, int):
        if _bits(left) + _bits(right) > MAX_BITS:
            raise _too_big(f"'{ast.unparse(node)}'")


def _eval(node):
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if _bits(node.value) > MAX_BITS:
            raise _too_big("A number")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        _check(node, left, right)
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
        return _UNOPS[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and not node.keywords):
        args = [_eval(a) for a in node.args]
        name = node.func.id
        low, high = _ARITY.get(name, (1, 1))
        if not low <= len(args) <= (high or len(args)):
            raise ToolError(f"{name}() got {len(args)} number(s).", f"Give {name} {_ARITY_TEXT[(low, high)]}, e.g. {name}(2).")
        try:
            return _FUNCS[name](*args)
        except ValueError:
            raise ToolError(f"'{ast.unparse(node)}' has no real-number result.", "Check the numbers.") from None
    raise ToolError(f"'{ast.unparse(node)}' is not arithmetic the calculator accepts.",
                    f"Use numbers, + - * / // % **, parentheses and {', '.join(_FUNCS)}.")


# What an expression may hold: numbers, operators, parentheses and the words the
# calculator reads ("12 times 7", "sqrt"). A constrained call can then hold nothing
# else (a small model otherwise writes "}} 12 * 7 = 78." or ";;;;" into it), and it
# starts with a number, a word, "(" or "-" (",12 + 7" and ".36 * 6" were common).
EXPRESSION = {"pattern": r"^[0-9A-Za-z(-][0-9A-Za-z+*/().,%^ -]{0,199}$"}


@tool(template=lambda a, r: f"{a['expression']} = {r}.")
def calculate(expression: Annotated[str, EXPRESSION]) -> float:
    """Calculate the result of arithmetic: multiply, divide, add, subtract, powers, square roots.

    Args:
        expression: The arithmetic, as the request says it.
    """
    text = expression.strip().rstrip("=?").strip()
    if not text:
        raise ToolError("The expression is empty.", "Give some arithmetic, e.g. '12 * 7'.")
    if len(text) > MAX_EXPRESSION:
        raise ToolError(f"The expression is longer than {MAX_EXPRESSION} characters.", "Split it into smaller steps.")
    text = _NUMBER_WORDS.sub(lambda m: _number(m.group(0)), text)
    for pattern, repl in _WORDS:
        text = re.sub(pattern, repl, text, flags=re.I)
    text = re.sub(r"\bsqrt\s+([\d.]+)", r"sqrt(\1)", text)
    text = _without_lead_in(text)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ToolError(f"'{expression}' is not a valid expression.", "Write it like '12 * 7' or '(3 + 4) / 2'.")
    try:
        value = _eval(tree)
    except ZeroDivisionError:
        raise ToolError("Division by zero.", "Check the divisor.")
    except (OverflowError, ValueError, TypeError, RecursionError) as exc:
        raise ToolError(f"Cannot compute '{expression}': {exc}.", "Check the numbers.")
    if isinstance(value, complex):
        raise ToolError(f"'{expression}' has no real-number result.", "Check the signs of the numbers.")
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        raise ToolError(f"'{expression}' is too large to compute.", "Use smaller numbers.")
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return round(value, 12) if isinstance(value, float) else value


# -- unit conversion -------------------------------------------------------------------
# unit -> (dimension, factor to the dimension's base unit)
_UNITS: dict[str, tuple[str, float]] = {}
for _dim, _table in {
    "length": {"m": 1, "km": 1e3, "cm": 1e-2, "mm": 1e-3, "mi": 1609.344, "yd": 0.9144, "ft": 0.3048, "in": 0.0254,
               "nmi": 1852},
    "mass": {"kg": 1, "g": 1e-3, "mg": 1e-6, "t": 1e3, "lb": 0.45359237, "oz": 0.028349523125, "st": 6.35029318},
    "volume": {"l": 1, "ml": 1e-3, "cl": 1e-2, "m3": 1e3, "gal": 3.785411784, "qt": 0.946352946, "pt": 0.473176473,
               "cup": 0.2365882365, "floz": 0.0295735295625, "tbsp": 0.01478676478125, "tsp": 0.00492892159375},
    "time": {"s": 1, "ms": 1e-3, "min": 60, "h": 3600, "day": 86400, "week": 604800},
    "speed": {"m/s": 1, "km/h": 1 / 3.6, "mph": 0.44704, "kn": 0.514444},
    "data": {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 1024, "mib": 1024**2, "gib": 1024**3},
    "area": {"m2": 1, "km2": 1e6, "ha": 1e4, "acre": 4046.8564224, "ft2": 0.09290304},
}.items():
    for _u, _f in _table.items():
        _UNITS[_u] = (_dim, _f)
_TEMPERATURE = {"c", "f", "k"}
_ALIASES = {
    "meter": "m", "metre": "m", "kilometer": "km", "kilometre": "km", "centimeter": "cm", "centimetre": "cm",
    "millimeter": "mm", "millimetre": "mm", "mile": "mi", "yard": "yd", "foot": "ft", "feet": "ft", "inch": "in",
    "inches": "in", "kilogram": "kg", "kilo": "kg", "gram": "g", "milligram": "mg", "tonne": "t", "ton": "t",
    "pound": "lb", "lbs": "lb", "ounce": "oz", "stone": "st", "liter": "l", "litre": "l", "milliliter": "ml",
    "millilitre": "ml", "gallon": "gal", "quart": "qt", "pint": "pt", "tablespoon": "tbsp", "teaspoon": "tsp",
    "second": "s", "sec": "s", "minute": "min", "hour": "h", "hr": "h", "days": "day", "weeks": "week",
    "kph": "km/h", "kmh": "km/h", "knot": "kn", "byte": "b", "kilobyte": "kb", "megabyte": "mb", "gigabyte": "gb",
    "terabyte": "tb", "hectare": "ha", "acres": "acre", "celsius": "c", "centigrade": "c", "fahrenheit": "f",
    "kelvin": "k", "°c": "c", "°f": "f", "degc": "c", "degf": "f",
}


def _unit(name: str) -> str:
    u = name.strip().lower().replace(" ", "").replace("degrees", "").replace("degree", "")
    if u in _UNITS or u in _TEMPERATURE:
        return u
    if u in _ALIASES:
        return _ALIASES[u]
    if u.endswith("s") and u[:-1] in _ALIASES:
        return _ALIASES[u[:-1]]
    if u.endswith("es") and u[:-2] in _ALIASES:
        return _ALIASES[u[:-2]]
    raise ToolError(f"Unknown unit '{name}'.", "Use a unit such as km, mi, kg, lb, l, gal, C, F, mph or GB.")


# The schema lists every unit with its spelt-out names, so a constrained call can name
# only a unit we know, and can copy the word the user wrote ("pounds", "inches").
_SPELT = sorted({*_ALIASES, *(a + "s" for a in _ALIASES if len(a) > 3 and not a.endswith(("s", "h")) and a.isalpha())}
                - set(_UNITS) - _TEMPERATURE)
Unit = Literal[tuple(sorted(_UNITS) + sorted(_TEMPERATURE) + _SPELT)]


@tool(template=lambda a, r: f"{a['value']:g} {r['from']} is {r['result']:g} {r['to']}.")
def convert_units(value: float, from_unit: Unit, to_unit: Unit) -> dict:
    """Convert a quantity between units of length, mass, volume, time, speed, data, area or temperature.

    Args:
        value: The number to convert.
        from_unit: Its unit, e.g. km.
        to_unit: The unit wanted, e.g. mi.
    """
    a, b = _unit(from_unit), _unit(to_unit)
    if a in _TEMPERATURE or b in _TEMPERATURE:
        if not (a in _TEMPERATURE and b in _TEMPERATURE):
            raise ToolError(f"Cannot convert {from_unit} to {to_unit}.", "Both units must be temperatures.")
        kelvin = {"c": value + 273.15, "f": (value - 32) * 5 / 9 + 273.15, "k": value}[a]
        result = {"c": kelvin - 273.15, "f": (kelvin - 273.15) * 9 / 5 + 32, "k": kelvin}[b]
    else:
        (da, fa), (db, fb) = _UNITS[a], _UNITS[b]
        if da != db:
            raise ToolError(f"Cannot convert {from_unit} ({da}) to {to_unit} ({db}).", "Pick two units of the same kind.")
        result = value * fa / fb
    return {"value": value, "from": a, "to": b, "result": round(result, 6)}


# -- notes -----------------------------------------------------------------------------
@tool(states=lambda a, r: r["text"], template=lambda a, r: f"Saved note {r['id']}: {r['text']}")
def add_note(text: str) -> dict:
    """Save a short note for later.

    Args:
        text: What to write down, as the request says it.
    """
    text = _text(text, "note", MAX_NOTE_CHARS)
    with _locked("notes"):
        notes = _load("notes")
        note = {"id": _next_id(notes), "text": text, "created": datetime.now().astimezone().isoformat(timespec="seconds")}
        notes.append(note)
        _save("notes", notes)
    return note


@tool(template=lambda a, r: _listed(r, "notes", lambda n: f"{n['id']}. {n['text']}"))
def list_notes(query: str = "") -> list[dict]:
    """Show my saved notes, newest first; with a query, only the notes that contain it.

    Args:
        query: Words the notes must contain; empty for every note.
    """
    words = query.lower().split()
    notes = [n for n in _load("notes") if all(w in n["text"].lower() for w in words)]
    return sorted(notes, key=lambda n: -int(n["id"]))


# -- file search ------------------------------------------------------------------------
MAX_SCAN = 20000          # files visited per search, so a huge folder cannot stall the assistant
MAX_GREP_BYTES = 1 << 20  # only small files are searched by content


@tool(template=lambda a, r: _listed(r, f"files matching '{a['query']}'", lambda f: f["path"]))
def search_files(query: str, limit: int = 10) -> list[dict]:
    """Find files in the chosen folder whose name (or text content) contains the query.

    Args:
        query: A word from the file name or its text.
        limit: Most results to return.
    """
    root = _settings.files_root
    if root is None:
        raise ToolError("No folder is chosen for file search.", "Start the assistant with --files DIR.")
    q = query.strip().lower()
    if not q:
        raise ToolError("The search is empty.", "Say what to look for.")
    limit = max(1, min(int(limit), 100))
    by_name, by_text, seen = [], [], 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        hidden = _settings.include_hidden
        dirnames[:] = sorted(d for d in dirnames if hidden or not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") and not hidden:
                continue
            seen += 1
            if seen > MAX_SCAN or len(by_name) >= limit:
                break
            path = Path(dirpath) / name
            # A symlink may point outside the chosen folder: never follow it there.
            try:
                real = path.resolve()
                real.relative_to(root)
            except (ValueError, OSError):
                continue
            rel = str(path.relative_to(root))
            if q in name.lower():
                by_name.append({"path": rel, "match": "name", "size": real.stat().st_size})
            elif len(by_text) < limit and real.is_file() and real.stat().st_size <= MAX_GREP_BYTES:
                line = _grep(real, q)
                if line is not None:
                    by_text.append({"path": rel, "match": "text", "line": line, "size": real.stat().st_size})
    return (by_name + by_text)[:limit]


def _grep(path: Path, q: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if q in line.lower():
                    return line.strip()[:200]
    except (UnicodeDecodeError, OSError):
        return None  # binary or unreadable: name matches only
    return None


# -- system info ----------------------------------------------------------------------
@tool(template=lambda a, r: f"{r['os']} on {r['machine']}: {r['cpu_cores']} cores, "
      f"{r['memory_available_gb']} of {r['memory_total_gb']} GB memory free, {r['disk_free_gb']} GB disk free.")
def system_info() -> dict:
    """Describe this computer: operating system, processor, memory, disk and uptime."""
    import psutil

    mem = psutil.virtual_memory()
    disk = psutil.disk_usage(str(Path.home()))
    return {
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_cores": psutil.cpu_count(logical=True),
        "cpu_percent": psutil.cpu_percent(interval=0.1),
        "memory_total_gb": round(mem.total / 1e9, 1),
        "memory_available_gb": round(mem.available / 1e9, 1),
        "disk_free_gb": round(disk.free / 1e9, 1),
        "uptime_hours": round((time.time() - psutil.boot_time()) / 3600, 1),
        "python": platform.python_version(),
    }


# The starter set, in the order a prompt lists them.
TOOLS = [get_time, set_timer, add_reminder, list_reminders, calculate, convert_units, add_note, list_notes,
         search_files, system_info]
