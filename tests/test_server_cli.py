"""`edge serve` from the command line: option errors, a busy port, and a real server process."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest
from click.testing import CliRunner

from edge.cli import cli
from edge.server.run import free_port


def test_bad_queue_size_is_one_line():
    r = CliRunner().invoke(cli, ["serve", "--queue-size", "0"])
    assert r.exit_code == 1
    assert r.output == "Error: queue_size must be at least 1 (got 0).\n"


def test_busy_port_says_what_to_do():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = CliRunner().invoke(cli, ["serve", "--port", str(port)])
    assert r.exit_code == 1
    assert r.output == (f"Error: Cannot listen on 127.0.0.1:{port}: Address already in use. "
                        "Pick another --port or stop the program using it.\n")


def test_address_this_machine_lacks_says_so():
    r = CliRunner().invoke(cli, ["serve", "--host", "192.0.2.1", "--port", "8080", "--api-key", "k"])
    assert r.exit_code == 1
    assert r.output.startswith("Error: Cannot listen on 192.0.2.1:8080: Cannot assign requested address. "
                               "192.0.2.1 is not an address of this machine")


@pytest.mark.slow
def test_edge_serve_process_with_api_key():
    port = free_port()
    env = dict(os.environ, EDGE_API_KEY="k3y")
    proc = subprocess.Popen([sys.executable, "-c", "from edge.cli import main; main()", "serve", "--port", str(port),
                             "--threads", "1", "--log-level", "warning"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert proc.stderr.readline() == f"Serving smollm2-135m-instruct (llama.cpp) on {url}/v1  (Ctrl-C to stop)\n"
        assert httpx.post(url + "/v1/chat/completions", json={}).status_code == 401
        client = openai.OpenAI(base_url=url + "/v1", api_key="k3y", max_retries=0)
        r = client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert "Paris" in r.choices[0].message.content
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode in (0, -15)
