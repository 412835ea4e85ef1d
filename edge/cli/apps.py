"""`edge assistant`, `edge deploy pi` and `edge export`: the apps' command lines.

Each command forwards its options to the app's library function in apps/;
the help texts come from the apps' option dataclasses.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from .common import json_option, model_option, print_json, renamed


def _help(cls, name: str) -> str:
    return next(f.metadata["help"] for f in fields(cls) if f.name == name)


# -- edge deploy pi ---------------------------------------------------------------------
@click.group("deploy")
def deploy():
    """Deploy a model and the edge server to another machine."""


def _pi_help(name: str) -> str:
    from edge.apps.pi.bundle import PiOptions

    return _help(PiOptions, name)


def _target_help(name: str) -> str:
    from edge.apps.pi.deploy import Target

    return _help(Target, name)


@deploy.command("pi")
@click.option("--host", default=None, help=_target_help("host") + " Required unless --out is given.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Only build the bundle as this .tar.gz, without a host.")
@model_option
@click.option("--profile", default="pi5-8gb", show_default=True, help=_pi_help("profile"))
@click.option("--port", type=int, default=8080, show_default=True, help=_pi_help("port"))
@click.option("--bind", "bind_host", default=None, help=_pi_help("host"))
@click.option("--lan", is_flag=True, help=_pi_help("lan"))
@click.option("-c", "--ctx", "n_ctx", type=int, default=2048, show_default=True, help=_pi_help("n_ctx"))
@click.option("--threads", type=int, default=None, help=_pi_help("threads"))
@click.option("--guard/--no-guard", default=True, help=_pi_help("guard"))
@click.option("--api-key", envvar="EDGE_API_KEY", default=None, help=_pi_help("api_key") + " Also read from EDGE_API_KEY.")
@click.option("--service", default="edge", show_default=True, help=_pi_help("service"))
@click.option("--prefix", default="edge", show_default=True, help=_target_help("prefix"))
@click.option("--ssh", "ssh_command", default=None, help=_target_help("ssh") + " Default: 'ssh -o ConnectTimeout=10'.")
@click.option("--worker", is_flag=True, help=_pi_help("worker"))
@click.option("--worker-only", is_flag=True, help=_pi_help("worker_only"))
@click.option("--worker-host", default="127.0.0.1", show_default=True, help=_pi_help("worker_host"))
@click.option("--worker-port", type=int, default=50052, show_default=True, help=_pi_help("worker_port"))
@click.option("--worker-mem", type=int, default=None, metavar="MB", help=_pi_help("worker_mem"))
@click.option("--i-understand-no-auth", is_flag=True, help=_pi_help("i_understand_no_auth"))
@json_option
def deploy_pi(host, out, model, profile, port, bind_host, lan, n_ctx, threads, guard, api_key, service, prefix,
              ssh_command, as_json, **worker):
    """Bundle a model with the edge server for a Raspberry Pi and deploy it over ssh.

    \b
    Examples:
      edge deploy pi --host pi@raspberrypi.local
      edge deploy pi --host pi@pi5 -m smollm2-135m-instruct --profile pi5-8gb
      edge deploy pi --host pi@pi5 --lan       # serve the LAN, with a generated API key
      edge deploy pi --out edge-pi.tar.gz      # build only; on the Pi: tar xzf, sh edge-bundle/install.sh
      edge deploy pi --host pi@pi5 --worker-only --worker-host 10.0.0.5 --i-understand-no-auth
    """
    from edge.apps.pi import bundle, deploy as dep

    if not host and not out:
        raise click.UsageError("Pass --host user@host to deploy, or --out bundle.tar.gz to build the bundle only.")
    opts = bundle.PiOptions(model=model, profile=profile, port=port, host=bind_host, lan=lan, n_ctx=n_ctx,
                            threads=threads, guard=guard, api_key=api_key, service=service, **worker)
    if host:
        target = dep.Target(host=host, prefix=prefix, **({"ssh": ssh_command} if ssh_command else {}))
    if out:
        built = bundle.build_archive(opts, out)
        if as_json:
            return print_json(built.to_dict())
        _tell_key(built)
        click.echo(f"Artifact: {built.artifact} ({built.backend}) for {profile}" if built.artifact else
                   "Worker only: no model in the bundle")
        for reason in built.reasons:
            click.echo(f"  {reason}")
        click.echo(f"Bundle: {built.path} ({built.files} files, {built.bytes / 1e6:.1f} MB)")
        click.echo("On the Pi: tar xzf {0} && sh edge-bundle/install.sh".format(Path(out).name))
        return
    done = dep.deploy(opts, target)
    if as_json:
        return print_json({**done.to_dict(), "api_key_generated": done.bundle.api_key_generated})
    _tell_key(done.bundle)
    click.echo(f"Artifact: {done.bundle.artifact} ({done.bundle.backend}) for {profile}" if done.bundle.artifact else
               "Worker only: no model in the bundle")
    for reason in done.bundle.reasons:
        click.echo(f"  {reason}")
    click.echo(f"Sent {len(done.sent)} file(s) to {host}:{prefix}" if done.sent else f"Nothing changed; sent no files to {host}.")
    for line in done.install_log.strip().splitlines():
        click.echo(f"  {line}")
    if done.health:
        click.echo(f"Health: {done.health.get('status')} ({done.health.get('model')} on {done.health.get('backend')}, "
                   f"port {port})")
    if done.worker:
        click.echo(f"Worker: {done.worker['endpoint']} lends {done.worker['free'] / 1e6:.0f} MB; "
                   f"use it with --rpc {host.split('@')[-1]}:{worker['worker_port']}")



def _tell_key(built) -> None:
    if built.api_key_generated:
        click.echo(f"API key (generated; clients send 'Authorization: Bearer KEY'): {built.api_key_generated}")


# -- edge export ---------------------------------------------------------------------------
def _export_help(name: str) -> str:
    from edge.apps.export import ExportOptions

    return _help(ExportOptions, name)


@click.command("export")
@click.option("--target", type=click.Choice(["android", "ios"]), required=True, help=_export_help("target"))
@click.option("--out", required=True, type=click.Path(file_okay=False), help=_export_help("out"))
@model_option
@click.option("--to", "fmt", default=None, metavar="FORMAT", help=_export_help("format"))
@click.option("--quant", default=None, metavar="[FORMAT=]QUANT", help=_export_help("quant"))
@click.option("--profile", default=None, help=_export_help("profile"))
@click.option("--quality/--no-quality", default=True, help=_export_help("quality"))
@click.option("--min-agreement", "threshold", type=float, default=0.90, show_default=True, help=_export_help("threshold"))
@click.option("--allow-below-threshold", is_flag=True, help=_export_help("allow_below_threshold"))
@json_option
@renamed("--format", "--to", "fmt")
def export(target, out, model, fmt, quant, profile, quality, threshold, allow_below_threshold, as_json):
    """Export a model for a phone's own runtime (llama.cpp, ONNX Runtime Mobile, mlx-swift).

    \b
    Examples:
      edge export --target android --out phone/            # GGUF Q4_0 for llama.cpp
      edge export --target android --to onnx --out phone/
      edge export --target android --quant gguf=q8_0 --out phone/
      edge export --target ios --out phone/                # MLX 4-bit for mlx-swift
    """
    from edge.apps.export import ExportOptions, export as run

    if quant and "=" in quant:  # FORMAT=QUANT, as in convert and bench
        qfmt, _, quant = quant.partition("=")
        if fmt and fmt != qfmt:
            raise click.UsageError(f"--to {fmt} and --quant {qfmt}={quant} name different formats.")
        fmt = qfmt
    done = run(ExportOptions(target=target, out=out, model=model, format=fmt, quant=quant, profile=profile,
                             quality=quality, threshold=threshold, allow_below_threshold=allow_below_threshold))
    if as_json:
        return print_json(done.to_dict())
    click.echo(f"Exported {done.format} {done.quant} for {done.target}: {done.path} ({done.size / 1e6:.1f} MB)")
    click.echo(f"  quant: {done.reason}")
    if done.quality:
        click.echo(f"  quality: top-1 agreement {done.quality['top1_agreement']:.2f} with the source model")
    if done.warning:
        click.echo(f"  warning: {done.warning}")
    click.echo(f"  runtime: {done.runtime} (see README.md there)")


# -- edge assistant ----------------------------------------------------------------------
def _assistant_help(name: str) -> str:
    from edge.apps.assistant.loop import AssistantOptions

    return _help(AssistantOptions, name)


@click.command("assistant")
@click.argument("request", required=False)
@model_option
@click.option("--backend", default=None, help=_assistant_help("backend"))
@click.option("--audio-file", type=click.Path(dir_okay=False), default=None, help="Take the request from this audio file (speech-to-text).")
@click.option("--voice", is_flag=True, help="Push-to-talk from the microphone: Enter starts recording, Enter stops.")
@click.option("--once", is_flag=True, help="Answer one request and exit.")
@click.option("--files", "files_root", type=click.Path(file_okay=False, exists=True), default=None, help=_assistant_help("files_root"))
@click.option("--hidden-files", is_flag=True, help=_assistant_help("hidden_files"))
@click.option("--guard/--no-guard", default=True, help=_assistant_help("guard"))
@click.option("--guard-threshold", type=float, default=None, help=_assistant_help("guard_threshold"))
@click.option("--max-tools", "top_k", type=int, default=3, show_default=True, help=_assistant_help("top_k"))
@click.option("-n", "--max-tokens", type=int, default=96, show_default=True, help=_assistant_help("max_tokens"))
@json_option
@renamed("--top-k", "--max-tools", "top_k", type=int)
def assistant(request, model, backend, audio_file, voice, once, files_root, hidden_files, guard, guard_threshold, top_k,
              max_tokens, as_json):
    """A local assistant with safe tools (time, timers, calculator, units, notes, files, system), text or voice.

    \b
    Examples:
      edge assistant                                   # chat; tools are called when a request needs one
      edge assistant --once "what is 12 times 7"
      edge assistant --audio-file question.wav --once --json
      edge assistant --voice --files ~/Documents
    """
    from edge.apps.assistant import session
    from edge.apps.assistant.loop import AssistantOptions

    opts = AssistantOptions(model=model, backend=backend, guard=guard, guard_threshold=guard_threshold, top_k=top_k,
                            max_tokens=max_tokens, files_root=files_root, hidden_files=hidden_files)
    session.main(opts, request=request, audio_file=audio_file, voice=voice, once=once or as_json, as_json=as_json)
