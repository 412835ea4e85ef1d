"""Tool retrieval with the real MiniLM encoder: ranking, top-k + margin + threshold, the disk cache."""
from __future__ import annotations

import numpy as np
import pytest

from edge.tools import Registry, Tool
from edge.tools.retrieval import BM25, Retriever, cache_dir, words


def _t(name, desc, *params):
    return Tool(name, desc, {"type": "object", "properties": {p: {"type": "string"} for p in params}})


TOOLS = [
    _t("get_weather", "Get the current weather forecast for a city.", "city", "unit"),
    _t("send_email", "Send an email message to a recipient.", "to", "subject", "body"),
    _t("set_timer", "Start a countdown timer for a number of minutes.", "minutes"),
    _t("convert_currency", "Convert an amount of money from one currency to another.", "amount", "source", "target"),
    _t("play_music", "Play a song or an album by an artist.", "song", "artist"),
    _t("book_restaurant", "Reserve a table at a restaurant.", "restaurant", "time", "people"),
    _t("translate_text", "Translate text into another language.", "text", "language"),
    _t("math.factorial", "Compute the factorial of a number.", "number"),
]


class Counting:
    """The real encoder, counting the texts it is asked to embed."""

    def __init__(self):
        from edge.embed import Encoder

        self.inner = Encoder.default()
        self.texts = 0

    def encode(self, texts, **kw):
        self.texts += len(texts)
        return self.inner.encode(texts, **kw)


@pytest.fixture(scope="module")
def encoder():
    return Counting()


@pytest.fixture(scope="module")
def registry(encoder):
    reg = Registry(TOOLS)
    reg._retriever = Retriever(list(reg), encoder=encoder)
    return reg


@pytest.mark.parametrize("query, expected", [
    ("Will it rain in Berlin tomorrow?", "get_weather"),
    ("Email Bob that the meeting moved to 3pm", "send_email"),
    ("Remind me in 10 minutes", "set_timer"),
    ("How many euros is 50 dollars?", "convert_currency"),
    ("Put on some Beatles", "play_music"),
    ("Get me a table for four at Luigi's at 8", "book_restaurant"),
    ("How do you say thank you in Japanese?", "translate_text"),
    ("What is 7 factorial?", "math.factorial"),
])
def test_best_tool_first(registry, query, expected):
    assert registry.retrieve(query, k=3, threshold=None)[0] == expected


def test_top_k_and_threshold(registry):
    assert len(registry.retrieve("weather in Paris", k=2, threshold=None)) == 2
    assert registry.retrieve("weather in Paris", k=0, threshold=0.99) == []
    every = registry.retrieve("weather in Paris", k=1, threshold=-1.0)
    assert sorted(every) == sorted(registry.names) and every[0] == "get_weather"
    scored = registry.retriever.search("weather in Paris", k=3, threshold=None)
    assert all(-1.0 <= s <= 1.0 for _, s in scored)


def test_margin_keeps_the_top_k_close_to_the_best(registry):
    q = "Will it rain in Berlin tomorrow?"
    top = registry.retrieve(q, k=4, threshold=None)
    assert registry.retrieve(q, k=4, threshold=None, margin=0.0) == ["get_weather"]
    assert registry.retrieve(q, k=4, threshold=None, margin=10.0) == top
    sizes = []
    for m in (0.0, 0.05, 0.1, 0.2, 0.4, 10.0):
        kept = registry.retrieve(q, k=4, threshold=None, margin=m)
        assert kept == top[:len(kept)]  # always the best ones, in order
        sizes.append(len(kept))
    assert sizes == sorted(sizes)
    # The threshold still adds tools the margin dropped.
    assert len(registry.retrieve(q, k=4, threshold=-1.0, margin=0.0)) == len(TOOLS)


def test_call_keeps_only_the_clear_winner_of_few_tools():
    from edge.tools import CallOptions
    from edge.tools.call import select

    reg = Registry([TOOLS[0], TOOLS[7]])  # fewer tools than top-k: the margin still cuts
    assert [n for n, _ in select("Will it rain in Berlin tomorrow?", reg, CallOptions())] == ["get_weather"]
    assert len(select("Will it rain in Berlin tomorrow?", reg, CallOptions(margin=None, tool_choice="required"))) == 2


def test_embeddings_cached_on_disk_by_text_hash(registry, encoder):
    files = {p.stem for p in cache_dir().glob("*.npy")}
    assert {t.key() for t in TOOLS} <= files
    before = encoder.texts
    again = Retriever(list(registry), encoder=encoder)
    assert encoder.texts == before  # nothing re-embedded
    np.testing.assert_array_equal(again.matrix, registry.retriever.matrix)
    changed = [_t("get_weather", "Weather, changed description.", "city")]
    Retriever(changed, encoder=encoder)
    assert encoder.texts == before + 1  # only the changed tool


def test_words_and_bm25():
    assert words("Restaurants_2_FindRestaurants the cities") == ["restaurant", "restaurant", "citie"]
    bm = BM25(["get weather city", "send email", "weather alerts weather"])
    s = bm.scores("weather please")
    assert s[1] == 0 and s[0] > 0 and s[2] > s[0]
