"""Splitting a model across RPC workers: `edge worker`, `--rpc`, the split, and what happens when a worker dies."""
from __future__ import annotations

import dataclasses
import json
import signal
import socket

import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.device import probe as probe_device
from edge.errors import InvalidOption, WorkerLost
from edge.rpc import WorkerInfo, parse_endpoints, probe
from edge.rpc.lab import free_port, local_workers, netns_missing, netns_workers, stop
from edge.select import Fit, split_layers

from tiny_models import tiny

GREEDY = dict(max_tokens=24, temperature=0, ignore_eos=True)
# One thread per process: the workers and the split model's process share this machine's cores.
PROMPT = "The quick brown fox"
MB = 1 << 20


@pytest.fixture(scope="module")
def tiny_gguf():
    return tiny("llama", {"gguf": "f16"})[("gguf", "f16")]


@pytest.fixture(scope="module")
def local_text(tiny_gguf):
    import edge

    with edge.load("tiny-llama", n_ctx=256) as m:
        return m.generate(PROMPT, **GREEDY)


def small_device(mb: int = 150):
    """This machine with too little free memory for any layer: the layers go to the workers."""
    return dataclasses.replace(probe_device(), ram_available=mb * MB)


@pytest.fixture(scope="module")
def two_workers(tiny_gguf):
    with local_workers(2, mem=512, threads=1) as (endpoints, procs):
        yield endpoints


# -- addresses and probing ------------------------------------------------------------------
def test_parse_endpoints():
    assert parse_endpoints("127.0.0.1:50052, pi5.local:07000") == ["127.0.0.1:50052", "pi5.local:7000"]
    assert parse_endpoints(["a:1,b:2", "c:3"]) == ["a:1", "b:2", "c:3"]
    for bad in ("nonsense", "host:", "host:70000", "a:1,a:1", "[::1]:7000", "::1:7000"):
        with pytest.raises(InvalidOption):
            parse_endpoints(bad)


def test_probe_reports_the_memory_cap(two_workers):
    info = probe(two_workers[0])
    assert (info.free, info.total, info.devices) == (512 * MB, 512 * MB, 1)


def test_closed_port_is_a_one_line_error(tiny_gguf):
    port = free_port()
    r = CliRunner().invoke(cli, ["run", "-m", "tiny-llama", "--no-guard", "--rpc", f"127.0.0.1:{port}", "hi"])
    assert r.exit_code == 1
    assert r.output == (f"Error: Cannot reach RPC worker 127.0.0.1:{port}: Connection refused. "
                        f"Start one there with `edge worker --host ... --port {port}`, or fix the address.\n")


def test_bad_address_is_a_one_line_error():
    r = CliRunner().invoke(cli, ["which", "-m", "tiny-llama", "--rpc", "127.0.0.1"])
    assert r.exit_code == 1
    assert r.output == "Error: '127.0.0.1' is not a worker address. Write HOST:PORT, e.g. 127.0.0.1:50052.\n"


def test_a_port_that_is_not_a_worker(tiny_gguf):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        import threading

        def answer():
            conn, _ = srv.accept()
            conn.recv(64)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

        threading.Thread(target=answer, daemon=True).start()
        r = CliRunner().invoke(cli, ["which", "-m", "tiny-llama", "--rpc", f"127.0.0.1:{port}"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1
    assert r.output.startswith(f"Error: 127.0.0.1:{port} does not answer like an RPC worker")


def test_worker_refuses_a_public_address_without_the_flag():
    r = CliRunner().invoke(cli, ["worker", "--host", "0.0.0.0", "--port", str(free_port())])
    assert r.exit_code == 1
    assert r.output.startswith("Error: Refusing to listen on 0.0.0.0: ggml-rpc has no authentication")
    assert "--i-understand-no-auth" in r.output


def test_worker_on_an_address_this_machine_lacks_says_so():
    # 192.0.2.0/24 is reserved for documentation (RFC 5737): no machine has it.
    r = CliRunner().invoke(cli, ["worker", "--host", "192.0.2.1", "--port", "50052", "--i-understand-no-auth"])
    assert r.exit_code == 1
    assert r.output == ("Error: Cannot listen on 192.0.2.1:50052: Cannot assign requested address. "
                        "192.0.2.1 is not an address of this machine: pass one of its own (`ip addr` lists them), "
                        "or 0.0.0.0 for all of them.\n")


# -- the split plan ----------------------------------------------------------------------------
def _fit(available_local: int, remote: int) -> Fit:
    return Fit(weights=30 * MB, kv_cache=0, overhead=10 * MB, available=available_local + remote, n_ctx=256,
               kv_source="test", remote=remote)


def test_split_follows_the_memory_each_device_lends(tiny_gguf):
    workers = [WorkerInfo("h1:1", 1000 * MB, 1000 * MB), WorkerInfo("h2:2", 1000 * MB, 1000 * MB)]
    split = split_layers(tiny_gguf, _fit(0, 1800 * MB), workers)
    assert [(d["name"], d["endpoint"], d["layers"], d["output"]) for d in split] == [
        ("local", None, [], False), ("RPC0", "h1:1", [0, 0], False), ("RPC1", "h2:2", [1, 1], True)]


def test_split_that_cannot_place_the_layers(tiny_gguf):
    from edge.errors import DoesNotFit

    workers = [WorkerInfo("h1:1", 1 * MB, 1 * MB)]
    with pytest.raises(DoesNotFit):
        split_layers(tiny_gguf, _fit(0, 1 * MB), workers)


def test_which_shows_the_split(two_workers):
    r = CliRunner().invoke(cli, ["which", "-m", "tiny-llama", "-c", "256", "--rpc", ",".join(two_workers), "--json"])
    assert r.exit_code == 0, r.output
    split = json.loads(r.output)["split"]
    assert [d["endpoint"] for d in split] == [None] + two_workers
    assert sum(d["n_layers"] for d in split) == 2 and split[-1]["output"]


# -- generation across workers -----------------------------------------------------------------
def test_split_greedy_output_matches_local(two_workers, local_text):
    import edge

    with edge.load("tiny-llama", n_ctx=256, threads=1, rpc=two_workers, device=small_device()) as m:
        assert [(d["endpoint"], d["n_layers"]) for d in m.devices] == [(None, 0), (two_workers[0], 1), (two_workers[1], 1)]
        assert m.generate(PROMPT, **GREEDY) == local_text
        # The cache is reused across calls, as on one device.
        assert m.generate(PROMPT, **GREEDY) == local_text


def test_run_json_names_the_devices(two_workers, local_text):
    r = CliRunner().invoke(cli, ["run", "-m", "tiny-llama", "--raw", "--no-guard", "--json", "-t", "0", "-n", "24",
                                 "--ignore-eos", "-c", "256", "--threads", "1", "--rpc", ",".join(two_workers), PROMPT])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["text"] == local_text
    assert [d["endpoint"] for d in out["devices"]] == [None] + two_workers
    assert [d["name"] for d in out["devices"]] == ["local", "RPC0", "RPC1"]


def test_worker_killed_mid_stream_then_reload_locally(tiny_gguf, local_text):
    import edge

    with local_workers(2, mem=512, threads=1) as (endpoints, procs):
        m = edge.load("tiny-llama", n_ctx=256, threads=1, rpc=endpoints, device=small_device())
        pieces = m.stream(PROMPT, **GREEDY)
        next(pieces)
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait()
        with pytest.raises(WorkerLost) as info:
            list(pieces)
        assert str(info.value) == (f"RPC worker {endpoints[1]} stopped answering; this request could not finish. "
                                   "Restart it (edge worker) and load the model again, or drop --rpc if the model "
                                   "fits this device.")
        # The model fits this machine alone: it reloads here and answers as before.
        m._device = None
        assert m.recover() == "tiny-llama reloaded on this device alone after an RPC worker went away"
        assert m.devices is None and m.generate(PROMPT, **GREEDY) == local_text
        m.close()


def test_worker_lost_and_model_too_big_alone_refuses(tiny_gguf):
    import edge

    with local_workers(1, mem=512, threads=1) as (endpoints, procs):
        m = edge.load("tiny-llama", n_ctx=256, threads=1, rpc=endpoints, device=small_device(20))
        stop(procs)
        with pytest.raises(WorkerLost):
            m.generate(PROMPT, **GREEDY)
        assert m.recover().startswith("tiny-llama was split across RPC workers, one of them went away, "
                                      "and it does not fit this device alone")
        with pytest.raises(WorkerLost, match="does not fit this device alone"):
            m.generate(PROMPT, **GREEDY)


def test_server_answers_the_lost_request_and_keeps_serving(tiny_gguf, local_text):
    import httpx

    import edge
    from edge.server.run import Background

    body = {"model": "tiny-llama", "prompt": PROMPT, "max_tokens": 24, "temperature": 0}
    with local_workers(2, mem=512, threads=1) as (endpoints, procs):
        m = edge.load("tiny-llama", n_ctx=256, threads=1, rpc=endpoints, device=small_device())
        m._device = None  # reload decisions on this machine as it is
        with Background(m) as srv:
            metrics = httpx.get(srv.url + "/metrics").text
            assert f'edge_device_layers{{device="RPC1",endpoint="{endpoints[1]}"}} 1' in metrics
            stop(procs)
            r = httpx.post(srv.url + "/v1/completions", json=body, timeout=60)
            assert r.status_code == 503 and r.json()["error"]["code"] == "rpc_worker_lost"
            assert endpoints[0] in r.json()["error"]["message"]
            r = httpx.post(srv.url + "/v1/completions", json=body, timeout=60)
            assert r.status_code == 200
            assert "edge_rpc_workers_lost_total 1" in httpx.get(srv.url + "/metrics").text
        m.close()


# -- across network namespaces (CI runs as root) -------------------------------------------------------
@pytest.mark.skipif(netns_missing() is not None, reason=f"netns workers: {netns_missing()}")
def test_split_across_network_namespaces(tiny_gguf, local_text):
    import edge

    with netns_workers(2, mem=512, threads=1, port=free_port()) as (endpoints, procs):
        assert all(e.startswith("10.200.") for e in endpoints)
        with edge.load("tiny-llama", n_ctx=256, threads=1, rpc=endpoints, device=small_device()) as m:
            assert [d["n_layers"] for d in m.devices] == [0, 1, 1]
            assert m.generate(PROMPT, **GREEDY) == local_text


# -- the real model -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_split_matches_local():
    import edge

    with edge.load(n_ctx=512) as m:
        want = m.generate(PROMPT, **GREEDY)
    with local_workers(2, mem=60, threads=1) as (endpoints, procs):
        device = dataclasses.replace(probe_device(), ram_available=400 * MB)
        with edge.load(n_ctx=512, rpc=endpoints, device=device) as m:
            assert all(d["n_layers"] > 0 for d in m.devices), m.devices
            assert m.generate(PROMPT, **GREEDY) == want


def test_a_worker_in_use_is_reported_busy(two_workers):
    import edge
    from edge.errors import WorkerUnreachable

    with edge.load("tiny-llama", n_ctx=256, threads=1, rpc=two_workers[:1], device=small_device()):
        with pytest.raises(WorkerUnreachable, match="serves one client at a time and may be busy"):
            probe(two_workers[0], timeout=1.0)
    assert probe(two_workers[0]).devices == 1  # free again once the model is closed


def test_bench_rpc_rows(tiny_gguf, tmp_path):
    from edge.bench import rpc as rpc_bench

    opts = rpc_bench.RpcBenchOptions(model="tiny-llama", rpc="lab", lab_workers=1, prompt_tokens=8, gen_tokens=4,
                                     repetitions=1, threads=1, json=str(tmp_path / "rpc.json"))
    rows = rpc_bench.run(opts)
    assert [r["setup"] for r in rows] == ["local", "split over 1 loopback worker", "split over 1 netns worker"]
    assert rows[0]["devices"] == [] and rows[0]["decode_tok_s"] > 0
    assert sum(d["layers"] for d in rows[1]["devices"]) == 2 and rows[1]["devices"][-1]["output"]
    if netns_missing():
        assert rows[2]["error"] == f"skipped: {netns_missing()}"
    else:
        assert rows[2]["devices"][1]["device"].startswith("10.200.0.2:")
    assert json.loads((tmp_path / "rpc.json").read_text())["rows"] == rows
    assert rpc_bench.report(rows).splitlines()[0].split()[:3] == ["setup", "load", "s"]


def test_a_dropped_model_frees_its_workers(two_workers):
    import edge

    m = edge.load("tiny-llama", n_ctx=256, threads=1, rpc=two_workers[1:], device=small_device())
    child = m.backend._proc
    del m  # no close(): the child process goes with the last reference
    assert child.wait(timeout=10) is not None
    assert probe(two_workers[1]).devices == 1


@pytest.mark.skipif(netns_missing() is not None, reason=f"netns workers: {netns_missing()}")
def test_a_link_that_goes_down_mid_stream(tiny_gguf):
    import edge
    from edge.rpc.lab import set_link

    with netns_workers(2, mem=512, threads=1, port=free_port()) as (endpoints, procs):
        with edge.load("tiny-llama", n_ctx=256, threads=1, rpc=endpoints, device=small_device(),
                       rpc_timeout=3) as m:
            pieces = m.stream(PROMPT, **GREEDY)
            next(pieces)
            set_link(endpoints[1], up=False)  # no reset reaches the client: only the timeout notices
            with pytest.raises(WorkerLost, match=f"^RPC worker {endpoints[1]} stopped answering"):
                list(pieces)
