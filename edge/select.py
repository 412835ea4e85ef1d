"""Choosing the backend and artifact that run a model on this device.

`choose` takes the resolved model, the device and the load options and
returns a `Choice` with the reasons, including each rejected candidate.
Selection knows backends only through the registry table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import backends
from .config import LoadOptions
from .errors import BackendUnavailable, DoesNotFit, ModelNotFound
from .store import Artifact, ModelRef


@dataclass
class Candidate:
    backend: str
    artifact: Artifact
    ok: bool = True
    reason: str = ""


@dataclass
class Choice:
    backend: str
    artifact: Artifact
    reasons: list[str] = field(default_factory=list)
    rejected: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "artifact": self.artifact.to_dict(),
            "reasons": self.reasons,
            "rejected": [
                {"backend": c.backend, "artifact": c.artifact.label, "reason": c.reason} for c in self.rejected
            ],
        }


def choose(ref: ModelRef, backend: str | None = None, load: LoadOptions | None = None, device=None) -> Choice:
    load = load or LoadOptions()
    forced = backends.canonical(backend) if backend else None
    arts = ref.runnable()
    if not arts:
        raise ModelNotFound(
            f"'{ref.name}' has no runnable artifact (only a conversion source).",
            f"Convert it first: edge convert {ref.name}",
        )
    cands, rejected = [], []
    for name, entry in backends.REGISTRY.items():
        if forced and name != forced:
            continue
        mine = [a for a in arts if a.format == entry.format]
        if not mine:
            rejected.append(Candidate(name, arts[0], False, f"no {entry.format} artifact"))
            continue
        if not backends.installed(name):
            for a in mine:
                rejected.append(Candidate(name, a, False, f"{entry.package} is not installed"))
            continue
        for a in mine:
            cands.append(Candidate(name, a))
    if not cands:
        if forced:
            why = "; ".join(c.reason for c in rejected) or "no candidate"
            raise BackendUnavailable(f"Backend {forced} cannot run '{ref.name}': {why}.",
                                     "Drop --backend to let edge choose, or convert/install what is missing.")
        raise BackendUnavailable(f"No installed backend can run '{ref.name}'.", "Run `edge doctor` to see what is installed.")
    best = cands[0]
    reasons = [f"{best.backend} runs {best.artifact.format} artifacts and is installed"]
    if forced:
        reasons.insert(0, "forced with --backend")
    return Choice(best.backend, best.artifact, reasons, rejected + cands[1:])
