"""Undo common disguises before the guard classifies a text.

`normalise(text)` returns the text as the classifier should read it and the
names of the disguises it undid (`DISGUISES`): invisible characters, NFKC
compatibility forms and homoglyphs, leetspeak, letters split by dots or
spaces, and base64 or hex chunks that decode to text (the decoded text is
appended). Each step only touches what it recognises, so ordinary text in any
script comes back unchanged: homoglyphs are mapped only inside words that mix
Latin letters with look-alikes from Cyrillic or Greek, and leetspeak only
inside words that mix letters with digits or symbols.
"""
from __future__ import annotations

import base64
import binascii
import re
import unicodedata

INVISIBLE, HOMOGLYPH, LEET, SPLIT, ENCODED = "invisible", "homoglyph", "leetspeak", "split_letters", "encoded"
DISGUISES = (INVISIBLE, HOMOGLYPH, LEET, SPLIT, ENCODED)

# Format characters (Cf: zero-width space/joiners, bidi marks, soft hyphen, word
# joiner, BOM), variation selectors and tag characters carry no visible text.
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
                        "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f\U000e0100-\U000e01ef]")

# Cyrillic and Greek letters drawn like Latin ones (a subset of Unicode's
# confusables.txt: the single-letter look-alikes).
_CONFUSABLES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "ɡ": "g", "ı": "i", "ɑ": "a", "ο": "o", "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ϲ": "c", "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H",
    "О": "O", "Р": "P", "С": "C", "Т": "T", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Α": "A", "Β": "B",
    "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T",
    "Υ": "Y", "Χ": "X",
})
_LATIN = re.compile(r"[A-Za-z]")
_LOOKALIKE = re.compile("[" + "".join(chr(c) for c in _CONFUSABLES) + "]")

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
                       "@": "a", "$": "s", "!": "i", "|": "l", "€": "e", "£": "l"})
_LEET_TOKEN = re.compile(r"[A-Za-z0-9@$!|€£]{3,}")
# Not leetspeak: numbers, units and ordinals ("5kg", "10am", "3rd"), names like "mp3", "h264", "gpt4".
_NOT_LEET = re.compile(r"^(?:[\d.]+|\d+[A-Za-z]{1,3}|[A-Za-z]{1,4}\d+)$")
_SPLIT = re.compile(r"(?<!\w)[^\W\d_]([ .\-_*·•])(?:[^\W\d_]\1)+[^\W\d_](?!\w)")  # one separator throughout
_B64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[ :]?){8,}(?![0-9A-Fa-f])")
MAX_DECODED = 8  # chunks decoded per text: bounds the work on a text full of hashes


def _text_like(raw: bytes) -> str | None:
    """The bytes as text when they are mostly printable UTF-8 words, else None."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not s or sum(ch.isprintable() or ch in "\n\t" for ch in s) < 0.95 * len(s):
        return None
    letters = sum(ch.isalpha() or ch == " " for ch in s)
    return s if letters >= 0.7 * len(s) and len(s.split()) >= 2 else None


def _decoded(text: str) -> list[str]:
    out = []
    for m in _B64.finditer(text):
        chunk = m.group(0)
        if len(out) >= MAX_DECODED:
            break
        if chunk.isalpha() or chunk.isdigit():  # a long word or number, not an encoding
            continue
        try:
            s = _text_like(base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=False))
        except (binascii.Error, ValueError):
            s = None
        if s:
            out.append(s)
    for m in _HEX.finditer(text):
        if len(out) >= MAX_DECODED:
            break
        digits = re.sub(r"[ :]", "", m.group(0))
        if len(digits) % 2 == 0:
            s = _text_like(bytes.fromhex(digits))
            if s:
                out.append(s)
    return out


def _unhomoglyph(word: re.Match) -> str:
    w = word.group(0)
    return w.translate(_CONFUSABLES) if _LATIN.search(w) and _LOOKALIKE.search(w) else w


def _unleet(m: re.Match) -> str:
    w = m.group(0)
    core = w.rstrip("!|")  # "wow!" is punctuation, not leet
    if len(core) > 24:  # hashes and encoded chunks, not words
        return w
    letters = sum(c.isalpha() for c in core)
    if (_NOT_LEET.match(core) or not re.search(r"[0-9@$!|€£]", core) or letters < 2
            or re.search(r"[a-z].*[A-Z]", core)):  # mixed case inside: an identifier or key, not a word
        return w
    return core.translate(_LEET) + w[len(core):]


def normalise(text: str) -> tuple[str, list[str]]:
    """(the text with disguises undone, the disguises found)."""
    found = []
    s = _INVISIBLE.sub("", text)
    if s != text:
        found.append(INVISIBLE)
    t = unicodedata.normalize("NFKC", s)
    latin, other = len(_LATIN.findall(t)), len(_LOOKALIKE.findall(t))
    # Mostly Latin text: every look-alike is a disguise. Otherwise (Russian, Greek) only mixed-script words.
    t = t.translate(_CONFUSABLES) if other and latin >= 4 * other else re.sub(r"\w+", _unhomoglyph, t)
    if t.split() != s.split():  # folded look-alikes or styled letters, not just odd spaces
        found.append(HOMOGLYPH)
    s = t
    t = _SPLIT.sub(lambda m: re.sub(r"[ .\-_*·•]", "", m.group(0)), s)
    if t != s:
        found.append(SPLIT)
    s = t
    t = _LEET_TOKEN.sub(_unleet, s)
    if t != s:
        found.append(LEET)
    s = t
    decoded = _decoded(text)
    if decoded:
        found.append(ENCODED)
        s = s + "\n" + "\n".join(decoded)
    return s, found
