"""The Pi service's entry point: `edge serve` with the options of config.json.

    python -m edge.apps.pi.serve /opt/edge/config.json [/opt/edge]

config.json is the one place to change what the service runs; the systemd
unit only calls run.sh, which calls this. The second argument is the bundle
folder (the model path is relative to it) when the config is a copy elsewhere
(systemd's credential directory).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# config "serve" key -> `edge serve` option
FLAGS = {"host": "--host", "port": "--port", "n_ctx": "--ctx", "threads": "--threads", "api_key": "--api-key",
         "max_tokens": "--max-tokens", "served_name": "--name"}
SWITCHES = {"guard": ("--guard", "--no-guard")}


def argv(config: dict, root: Path) -> list[str]:
    """The `edge serve` arguments for a bundle config (model path relative to the bundle)."""
    serve = config["serve"]
    args = ["serve", "-m", str((root / serve["model"]).resolve())]
    for key, flag in FLAGS.items():
        if serve.get(key) is not None:
            args += [flag, str(serve[key])]
    for key, (on, off) in SWITCHES.items():
        if key in serve:
            args.append(on if serve[key] else off)
    return args


def main(path: str, root: str | None = None) -> None:
    from edge.cli import cli

    config_path = Path(path).resolve()
    config = json.loads(config_path.read_text())
    cli.main(args=argv(config, Path(root).resolve() if root else config_path.parent), prog_name="edge")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[2] / "config.json"),
         sys.argv[2] if len(sys.argv) > 2 else None)
