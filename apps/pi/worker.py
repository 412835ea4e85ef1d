"""The Pi worker service's entry point: `edge worker` with the options of config.json.

    python -m edge.apps.pi.worker /opt/edge/config.json

The "worker" key of config.json holds host, port, mem, threads, cache and
i_understand_no_auth, as `edge worker` takes them; a relative cache folder
lives under the bundle.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def argv(config: dict, root: Path) -> list[str]:
    """The `edge worker` arguments for a bundle config."""
    w = config["worker"]
    args = ["worker"]
    for key in ("host", "port", "threads", "mem"):
        if w.get(key) is not None:
            args += [f"--{key}", str(w[key])]
    if w.get("cache"):
        args += ["--cache", str(root / w["cache"])]
    if w.get("i_understand_no_auth"):
        args.append("--i-understand-no-auth")
    return args


def main(path: str) -> None:
    from edge.cli import cli

    config_path = Path(path).resolve()
    config = json.loads(config_path.read_text())
    cli.main(args=argv(config, config_path.parent), prog_name="edge")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[2] / "config.json"))
