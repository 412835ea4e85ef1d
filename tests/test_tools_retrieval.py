"""Tool retrieval with the real MiniLM encoder: ranking, top-k + margin + threshold, the disk cache."""
from __future__ import annotations

import numpy as np
import pytest

from edge.tools import Registry, Tool
from edge.tools.retrieval import BM25, QUERY_TOKENS, QUERY_WINDOWS, Retriever, cache_dir, query_vector, words


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

    def __getattr__(self, name):  # token_ids, windows, encode_ids: queries, not counted
        return getattr(self.inner, name)


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


def test_short_query_is_one_window_of_its_word_pieces(encoder):
    q = "Will it rain in Berlin tomorrow?"
    np.testing.assert_array_equal(query_vector(encoder, q), encoder.encode([q], max_tokens=QUERY_TOKENS)[0])
    np.testing.assert_array_equal(query_vector(encoder, ""), encoder.encode([""], max_tokens=QUERY_TOKENS)[0])


# 40 word pieces about the weather, then a second request past the first window.
FILLER = ("I am going hiking in the Alps next week and I would like to know whether it will rain or snow, "
          "how cold the nights get and how strong the wind will be up on the ridge. ")


def test_long_query_windows_are_averaged_up_to_the_cap(encoder):
    ids = encoder.token_ids(FILLER * 4)
    assert len(ids) > QUERY_TOKENS * QUERY_WINDOWS
    starts = list(range(0, QUERY_TOKENS * QUERY_WINDOWS, QUERY_TOKENS))
    rows = encoder.encode_ids(*encoder.windows(ids, starts, QUERY_TOKENS))
    assert len(rows) == QUERY_WINDOWS > 1
    np.testing.assert_allclose(query_vector(encoder, FILLER * 4), rows.mean(axis=0), rtol=0, atol=1e-7)


def test_a_request_past_the_first_window_is_still_found(registry):
    q = FILLER + "Also, please email my sister Anna the subject Trip and the message body See you soon."
    assert len(registry.retriever.encoder.token_ids(q)) > QUERY_TOKENS
    # By cosine alone (BM25 reads the whole query anyway): with the first window only,
    # translate_text came second.
    cos = registry.retriever.similarity(q)
    top2 = [registry.names[i] for i in np.argsort(-cos)[:2]]
    assert sorted(top2) == ["get_weather", "send_email"]
