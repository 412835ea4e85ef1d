"""`edge pull`: fetch a model from the Hugging Face Hub and make it runnable here.

A reference is NAME (a catalog model) or ORG/REPO, with an optional :QUANT and
@REVISION. With a GGUF quant (`:Q4_K_M`) from a repo of GGUF files, the one file
of that quant is fetched, as llama.cpp's `-hf` does, and registered in the store.
Otherwise the repo's config, weights (safetensors, or pytorch_model.bin when it
has none), tokenizer and chat template files are fetched and converted to the
format and quant edge.estimate picks for this device (or the ones asked for).
Files live in the standard Hugging Face cache (HF_HOME / HF_HUB_CACHE;
HF_ENDPOINT and HF_TOKEN are honoured), so an interrupted download resumes and
transformers shares it. Every LFS file is
checked against the sha256 the Hub reports for it.
"""
from __future__ import annotations

import json
import os
import re
import struct
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import manifest as mf
from .errors import BadModelFile, DoesNotFit, EdgeError, InvalidOption, ModelNotFound
from .formats import FORMATS, GGUF, PICKLE_INDEX, PICKLE_WEIGHTS, QUANTS, check_quant

DEFAULT_ENDPOINT = "https://huggingface.co"

# What a model-repo pull fetches: enough to convert and to chat, nothing else. Files at the top
# of the repo only (Llama's original/ folder holds consolidated .pth weights and a second
# tokenizer.model; onnx/ an ONNX copy), and no consolidated.safetensors (Mistral's second copy).
CONFIG_FILES = (
    "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
)
SAFETENSORS_INDEX = "model.safetensors.index.json"


def safetensors_weights(files) -> list[str]:
    return sorted(f for f in files if "/" not in f and f.endswith(".safetensors") and not f.startswith("consolidated"))


def pickle_weights(files) -> list[str]:
    """transformers' PyTorch weights: fetched only from a repo without safetensors; other pickles never."""
    return sorted(f for f in files if PICKLE_WEIGHTS.fullmatch(f))


def model_files(files) -> list[str]:
    """The files of a repo (its file list) that a pull fetches: config, tokenizer and chat template
    files, and the safetensors weights or, when the repo has none, its PyTorch weights."""
    files = set(files)
    weights = safetensors_weights(files)
    weights += [SAFETENSORS_INDEX] if weights else pickle_weights(files) + [PICKLE_INDEX]
    return sorted(f for f in (*CONFIG_FILES, *weights) if f in files)


REF = re.compile(r"^(?P<id>[^:@\s]+)(?::(?P<quant>[^@\s]+))?(?:@(?P<rev>\S+))?$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class HubError(EdgeError):
    """The Hub answered with an error that is not the user's input."""


class Offline(HubError):
    """No way to reach the Hub: HF_HUB_OFFLINE is set, or there is no network."""

    def __init__(self, what: str, why: str):
        super().__init__(
            f"Cannot download {what}: {why}.",
            "Fetch the files another way, then `edge import FILE.gguf` or `edge convert ./folder` "
            "(a Hugging Face model folder).")


class Interrupted(HubError):
    """A download that stopped part-way; the partial file stays in the cache to resume from."""


class GatedModel(HubError):
    """A gated repo, and no token (or one without access)."""


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _offline_env() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def licence_page(repo: str) -> str:
    return f"https://huggingface.co/{repo}"


# -- the reference --------------------------------------------------------------------------
@dataclass
class Ref:
    """What `edge pull` was asked for."""

    text: str
    repo: str
    name: str
    format: str | None = None      # from :QUANT
    quant: str | None = None
    revision: str | None = None
    entry: dict = field(default_factory=dict)


def split_quant(spec: str) -> tuple[str, str]:
    """'Q4_K_M' / 'gguf=q4_k_m' / 'int8' / '8bit' -> (format, quant)."""
    fmt, sep, q = spec.partition("=")
    if sep:
        return fmt.strip().lower(), check_quant(fmt.strip().lower(), q)
    for f in FORMATS:
        try:
            return f, check_quant(f, spec)
        except InvalidOption:
            continue
    known = ", ".join(q for f in FORMATS for q in QUANTS[f])
    raise InvalidOption(f"Unknown quant '{spec}'.", f"Choose one of: {known} (or FORMAT=QUANT).")


def catalog_name_for(repo: str) -> str | None:
    """The catalog model whose Hugging Face or GGUF repo is `repo`."""
    from edge.models import catalog

    low = repo.lower()
    for name, entry in catalog().items():
        if low in {(entry.get("hf_repo") or "").lower(), (entry.get("gguf_repo") or "").lower()}:
            return name
    return None


def parse_ref(text: str) -> Ref:
    from edge.models import catalog

    from .store import safe_name

    m = REF.match(text.strip())
    if not m:
        raise InvalidOption(f"Cannot read model reference '{text}'.", "Write NAME or ORG/REPO, then optionally :QUANT and @REVISION.")
    ident, spec, rev = m.group("id"), m.group("quant"), m.group("rev")
    fmt, quant = split_quant(spec) if spec else (None, None)
    if "/" in ident:
        if ident.count("/") != 1 or not all(ident.split("/")):
            raise InvalidOption(f"'{ident}' is not a Hugging Face model id.", "Write it as ORG/REPO.")
        name = catalog_name_for(ident)
        entry = catalog().get(name, {}) if name else {}
        if name is None:
            name = safe_name(re.sub(r"[-_.]gguf$", "", ident.split("/")[1], flags=re.I))
        return Ref(text, ident, name, fmt, quant, rev, entry)
    entry = catalog().get(ident.lower())
    if entry is None or not entry.get("hf_repo"):
        raise ModelNotFound(f"'{ident}' is not in the catalog.",
                            "Pull it by its Hugging Face id (edge pull ORG/REPO), or list the catalog with `edge models --available`.")
    repo = entry["gguf_repo"] if fmt == GGUF and entry.get("gguf_repo") else entry["hf_repo"]
    return Ref(text, repo, ident.lower(), fmt, quant, rev, entry)


# -- errors from huggingface_hub -> EdgeErrors ---------------------------------------------
def _errors(table) -> tuple:
    import importlib

    out = []
    for module, names in table:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        out += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return tuple(out)


def _cut_errors() -> tuple:
    """A connection that broke in the middle of a file (huggingface_hub's HTTP client is requests or httpx)."""
    return _errors((("requests.exceptions", ("ChunkedEncodingError",)), ("urllib3.exceptions", ("ProtocolError",)),
                    ("httpx", ("RemoteProtocolError", "ReadError"))))


def _network_errors() -> tuple:
    return _errors((("requests", ("ConnectionError", "Timeout")), ("httpx", ("ConnectError", "TimeoutException"))))


@contextmanager
def hub_errors(ref: Ref, token: str | None):
    """Turn huggingface_hub's exceptions into one-line EdgeErrors that say what to do."""
    from huggingface_hub import errors as he

    try:
        yield
    except he.GatedRepoError:
        raise _gated(ref, token) from None
    except he.RepositoryNotFoundError:
        raise ModelNotFound(f"No model '{ref.repo}' on {endpoint()}.",
                            "Check the id (ORG/REPO); a private repo needs HF_TOKEN.") from None
    except he.RevisionNotFoundError:
        raise ModelNotFound(f"{ref.repo} has no revision '{ref.revision}'.", "Use a branch, tag or commit of the repo.") from None
    except he.OfflineModeIsEnabled:
        raise Offline(ref.text, "HF_HUB_OFFLINE is set") from None
    except he.LocalEntryNotFoundError:
        raise Offline(ref.text, f"{endpoint()} cannot be reached and the files are not in the cache") from None
    except he.EntryNotFoundError as exc:
        raise ModelNotFound(f"{ref.repo} has no file {_url_tail(exc)}.", "List its files at " + licence_page(ref.repo)) from None
    except he.HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        if status == 401:
            raise _gated(ref, token) from None
        raise HubError(f"{endpoint()} answered {status} for {ref.repo}.", "Try again later.") from None
    except _cut_errors() as exc:
        raise Interrupted(f"The download of {ref.text} was cut off ({type(exc).__name__}).",
                          "Run the same `edge pull` again: it resumes where it stopped.") from None
    except _network_errors() as exc:
        raise Offline(ref.text, f"no network ({type(exc).__name__})") from None
    except OSError as exc:
        if "consistency check failed" not in str(exc).lower():
            raise
        raise Interrupted(f"The download of {ref.text} ended short of the size the Hub announced.",
                          "Run the same `edge pull` again.") from None


def _url_tail(exc) -> str:
    url = str(getattr(getattr(exc, "response", None), "url", "") or "")
    return url.rsplit("/resolve/", 1)[-1].split("/", 1)[-1] if "/resolve/" in url else "asked for"


def _gated(ref: Ref, token: str | None) -> GatedModel:
    page = licence_page(ref.repo)
    if token:
        return GatedModel(f"{ref.repo} is gated and HF_TOKEN has no access to it.",
                          f"Accept its licence at {page} with the account of that token.")
    return GatedModel(f"{ref.repo} is gated: it needs its licence accepted and a token.",
                      f"Accept the licence at {page}, then set HF_TOKEN to a token of that account.")


# -- the pull ---------------------------------------------------------------------------------
@dataclass
class PullResult:
    name: str
    repo: str
    revision: str
    kind: str                     # "gguf" (one file fetched) or "hf" (safetensors, then converted)
    path: Path                    # the GGUF file or the snapshot folder in the HF cache
    files: list[str]
    artifacts: list = field(default_factory=list)   # store Artifacts that run
    why: list[str] = field(default_factory=list)    # why this format and quant
    converted: bool = False

    def to_dict(self) -> dict:
        return {"name": self.name, "repo": self.repo, "revision": self.revision, "kind": self.kind,
                "path": str(self.path), "files": self.files, "converted": self.converted,
                "artifacts": [a.to_dict() for a in self.artifacts], "why": self.why}


def pull(ref: str, to=None, quant=None, name: str | None = None, force: bool = False, progress: bool = True,
         quality: bool = True, token: str | None = None, device=None, store=None, threshold: float = 0.90,
         allow_below_threshold: bool = False) -> PullResult:
    """Fetch `ref` (NAME or ORG/REPO, optionally :QUANT and @REVISION) and make it runnable.

    `to` / `quant` choose what a safetensors repo is converted to (default: the pick of
    edge.estimate for `device`, this machine when None); conversions go through the
    quality gate (`threshold`, `allow_below_threshold`) like `edge convert`'s."""
    from huggingface_hub import HfApi

    from .store import Store

    r = parse_ref(ref)
    if name:
        from .store import safe_name

        r.name = safe_name(name)
    store = store or Store()
    token = token or os.environ.get("HF_TOKEN") or None
    if _offline_env():
        raise Offline(r.text, "HF_HUB_OFFLINE is set")
    api = HfApi(endpoint=endpoint(), token=token)
    with hub_errors(r, token), _progress(progress):
        info = api.model_info(r.repo, revision=r.revision, files_metadata=True)
        if info.gated and not (token or _stored_token()):
            raise _gated(r, None)
        siblings = {s.rfilename: s for s in (info.siblings or [])}
        ggufs = sorted(f for f in siblings if f.lower().endswith(".gguf"))
        has_st = bool(safetensors_weights(siblings))
        want_fmt = r.format or _single_format(to)
        if ggufs and (want_fmt in (None, GGUF)) and (want_fmt == GGUF or not has_st):
            return _pull_gguf(r, info.sha, siblings, ggufs, token, store, device, force)
        if not has_st and not pickle_weights(siblings):
            raise BadModelFile(f"{r.repo} has neither safetensors (or pytorch_model.bin) weights nor a GGUF file"
                               + (f" of {r.quant}" if r.quant else "") + ".",
                               "Pull a repo with a model in safetensors or GGUF format.")
        return _pull_hf(r, info.sha, siblings, token, store, device, to, quant, force, progress,
                        dict(quality=quality, threshold=threshold, allow_below_threshold=allow_below_threshold))


def _stored_token() -> str | None:
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # an unreadable token file is the same as none
        return None


def _single_format(to) -> str | None:
    if not to:
        return None
    items = [t.strip().lower() for t in (to.split(",") if isinstance(to, str) else to) if t.strip()]
    return items[0] if len(items) == 1 else None


@contextmanager
def _progress(on: bool):
    """huggingface_hub's own tqdm bars, or none of them."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_off = are_progress_bars_disabled()
    if not on:
        disable_progress_bars()
    try:
        yield
    finally:
        if not on and not was_off:
            enable_progress_bars()


def _gguf_quant_of(filename: str) -> str | None:
    """The llama.cpp quant named in a GGUF file name (model-Q4_K_M.gguf -> q4_k_m)."""
    stem = Path(filename).name[: -len(".gguf")].lower()
    for q in sorted(QUANTS[GGUF], key=len, reverse=True):
        if re.search(rf"(^|[-_.]){re.escape(q)}($|[-_.])", stem):
            return q
    return None


def _pull_gguf(r: Ref, commit, siblings, ggufs, token, store, device, force) -> PullResult:
    from huggingface_hub import hf_hub_download

    by_quant: dict[str, list[str]] = {}
    for f in ggufs:
        q = _gguf_quant_of(f)
        if q:
            by_quant.setdefault(q, []).append(f)
    why = []
    if r.quant:
        q = r.quant
        if q not in by_quant:
            have = ", ".join(sorted(by_quant)) or "none named by quant"
            raise ModelNotFound(f"{r.repo} has no {q.upper()} GGUF file (it has: {have}).",
                                f"Pull one of those, e.g. edge pull {r.repo}:{next(iter(sorted(by_quant)), 'Q8_0').upper()}.")
        why.append(f"{q} asked for")
    else:
        q, why = _pick_gguf(r, sorted(by_quant), device)
    files = sorted(by_quant[q])
    if len(files) > 1 and not any(re.search(r"-0*1-of-\d+\.gguf$", f) for f in files):
        raise BadModelFile(f"{r.repo} has several {q.upper()} GGUF files: {', '.join(files)}.",
                           "Pull a repo with one GGUF file per quant.")
    # Split GGUFs (-00001-of-0000N) load from their first part; every part must be here.
    paths = [Path(hf_hub_download(r.repo, f, revision=commit, cache_dir=cache_dir(), endpoint=endpoint(), token=token))
             for f in files]
    for f, p in zip(files, paths):
        verify(p, siblings.get(f), f, r)
    main = paths[0]
    art = store.register_file(r.name, GGUF, q, main, r.entry, source=_source(r, commit, main, files[0]), force=force)
    return PullResult(r.name, r.repo, commit, GGUF, main, files, [art], why)


def _pick_gguf(r: Ref, have: list[str], device) -> tuple[str, list[str]]:
    """The quant of a GGUF repo to fetch when none was asked for: the estimate's pick among the files there."""
    from .device import probe
    from .estimate import catalog_facts, plan

    if not have:
        raise ModelNotFound(f"{r.repo} has no GGUF file named by its quant.", "Pull one with :QUANT, e.g. :Q4_K_M.")
    facts = catalog_facts(r.name)
    if facts is not None:
        p = plan(facts, device or probe(), formats=[GGUF], quants={GGUF: have})
        if p.pick is not None:
            return p.pick.quant, p.why
    from .select import rules

    order = rules()["quant_order"][GGUF]
    q = min(have, key=lambda x: order.index(x) if x in order else len(order))
    return q, [f"{q}: first of the default quant order among the repo's files (the model's size is not in the catalog)"]


def _source(r: Ref, commit: str, path: Path, file: str | None = None) -> dict:
    out = {"kind": "hub", "repo": r.repo, "revision": commit, "endpoint": endpoint(), "path": str(path)}
    if file:
        out["file"] = file
    return out


def verify(path: Path, sibling, filename: str, r: Ref) -> None:
    """Check a downloaded LFS file against the sha256 the Hub reported; remove it when it differs."""
    expected = None
    lfs = getattr(sibling, "lfs", None) if sibling is not None else None
    if lfs is not None:
        expected = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
    blob = Path(os.path.realpath(path))
    if expected is None and SHA256.match(blob.name):
        expected = blob.name  # the cache names an LFS blob by the sha256 the Hub sent as its ETag
    if expected is None:
        return
    got = mf.sha256_file(blob)
    if got != expected:
        for p in {blob, Path(path)}:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        raise BadModelFile(
            f"{filename} from {r.repo} failed its sha256 check (expected {expected[:12]}…, got {got[:12]}…); "
            "the damaged copy was removed.",
            f"Run `edge pull {r.text}` again; if it fails again, {endpoint()} serves a corrupt file.")


def _pull_hf(r: Ref, commit, siblings, token, store, device, to, quant, force, progress, gate: dict) -> PullResult:
    import glob

    from huggingface_hub import hf_hub_download, snapshot_download

    files = model_files(siblings)
    if "config.json" not in files:
        raise BadModelFile(f"{r.repo} has no config.json.", "Pull a Hugging Face transformers model repo.")
    # The architecture first, from config.json alone: a model the converter refuses costs no weight download.
    config = hf_hub_download(r.repo, "config.json", revision=commit, cache_dir=cache_dir(), endpoint=endpoint(),
                             token=token)
    _check_architecture(r, Path(config).parent)
    # Exact names, escaped: allow_patterns are fnmatch patterns.
    folder = Path(snapshot_download(r.repo, revision=commit, allow_patterns=[glob.escape(f) for f in files],
                                    cache_dir=cache_dir(), endpoint=endpoint(), token=token))
    for f in files:
        verify(folder / f, siblings.get(f), f, r)
    src = store.import_path(folder, name=r.name, force=True)
    man = dict(src.manifest)
    man[mf.K_SOURCE] = {**_source(r, commit, folder), "kind": "hf"}
    for key, value in ((mf.K_LICENSE, r.entry.get("license")), (mf.K_PARAMS, r.entry.get("parameters"))):
        if value and not man.get(key):
            man[key] = value
    mf.write(src.folder, man)

    targets, why = _targets(r, folder, device, to, quant)
    have = {(a.format, a.quant): a for a in store.artifacts(r.name)}
    todo = {f: [q for q in qs if force or (f, q) not in have] for f, qs in targets.items()}
    todo = {f: qs for f, qs in todo.items() if qs}
    converted = False
    if todo:
        from edge.converters import convert

        convert(source=str(folder), to=tuple(todo), quant=todo, name=r.name, force=force, progress=progress,
                store=store, **gate)
        converted = True
    have = {(a.format, a.quant): a for a in store.artifacts(r.name)}
    arts = [have[(f, q)] for f, qs in targets.items() for q in qs if (f, q) in have]
    return PullResult(r.name, r.repo, commit, "hf", folder, files, arts, why, converted)


def _check_architecture(r: Ref, folder: Path) -> None:
    from edge.converters.source import check_architecture, read_config

    check_architecture(read_config(folder), r.repo)


def _targets(r: Ref, folder: Path, device, to, quant) -> tuple[dict, list[str]]:
    """{format: [quant]} to convert to, and why."""
    from edge.converters.options import parse_quants, parse_targets

    if r.format:
        return {r.format: [r.quant]}, [f"{r.format} {r.quant} asked for"]
    if to or quant:
        targets = parse_targets(to) if to else tuple(dict.fromkeys(split_quant(q)[0] for q in _items(quant)))
        return {f: list(qs) for f, qs in parse_quants(quant, targets).items()}, ["format and quant asked for"]
    from .device import probe
    from .estimate import ModelFacts, plan

    cfg = json.loads((folder / "config.json").read_text())
    facts = ModelFacts.from_config(r.name, cfg, r.entry.get("parameters") or safetensors_parameters(folder)
                                   or _pickle_parameters(folder))
    dev = device or probe()
    p = plan(facts, dev)
    if p.pick is None:
        raise DoesNotFit(f"{r.name} would not fit {dev.name}: {'; '.join(p.why)}.",
                         "Pull a smaller model, or name a format and quant with --to/--quant.")
    return {p.pick.format: [p.pick.quant]}, p.why


def _pickle_parameters(folder: Path) -> int:
    """Parameter count of PyTorch weights: the converter reads them (torch, memory-mapped)."""
    from edge.converters.workcopy import pickle_parameters

    return pickle_parameters(folder)


def _items(quant) -> list[str]:
    if isinstance(quant, str):
        return [q for q in quant.split(",") if q.strip()]
    return list(quant or ())


def safetensors_parameters(folder: Path) -> int:
    """Parameter count from the safetensors headers (no tensor is read)."""
    total = 0
    sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        for key, t in header.items():
            if key != "__metadata__" and t.get("dtype") in sizes:
                count = 1
                for d in t["shape"]:
                    count *= d
                total += count
    return total


# -- the catalog, as `edge models --available` shows it ----------------------------------------
SIZE_QUANTS = ("q4_k_m", "q8_0", "f16")


def available(store=None, profile: str | None = None) -> list[dict]:
    """Every catalog model: family, size, context, licence, gated, estimated file size per quant,
    which artifacts of it are in the store, and with `profile` the estimate (edge.estimate.plan) there."""
    from edge.models import catalog

    from .formats import BITS_PER_WEIGHT
    from .store import Store

    store = store or Store()
    store.register_catalog()
    out = []
    for name, e in catalog().items():
        params = e.get("parameters")
        here = sorted(f"{a.format}-{a.quant}" for a in store.artifacts(name))
        out.append({
            "name": name, "family": e.get("family"), "hf_repo": e.get("hf_repo"), "gguf_repo": e.get("gguf_repo"),
            "architecture": e.get("architecture"), "parameters": params, "context_length": e.get("context_length"),
            "license": e.get("license"), "gated": bool(e.get("gated")), "chat_template": e.get("chat_template"),
            "sizes": {q: int(params * BITS_PER_WEIGHT[q] / 8) if params else None for q in SIZE_QUANTS},
            "recommended": e.get("recommended") or {}, "downloaded": here,
        })
        if profile:
            from .device import load_profile
            from .estimate import catalog_facts, plan

            facts = catalog_facts(name)
            out[-1]["estimate"] = plan(facts, load_profile(profile)).to_dict() if facts else None
    return out
