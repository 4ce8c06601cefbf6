"""Fixtures of the pretrained-weights tests: an isolated KSEG_HOME, a local HTTP server on
127.0.0.1, Hugging Face caches laid out on disk, and checkpoints in the authors' layouts
(random weights written by the tests). Nothing here touches the network."""

import http.server
import os
import threading

import numpy as np
import pytest

OFFLINE_VARS = ("HF_HUB_OFFLINE", "KSEG_OFFLINE", "HF_ENDPOINT")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty KSEG_HOME and Hugging Face cache; online (the server below is local)."""
    for var in OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KSEG_HOME", str(tmp_path / "kseg"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "kseg"


class Server:
    """Serves ``files`` ({url path: bytes}); paths under ``/short/`` announce more bytes than
    they send (a connection cut mid-download). ``hits`` counts requests per path."""

    def __init__(self):
        self.files, self.hits = {}, {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) * (2 if self.path.startswith("/short/") else 1)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


def lay_out_hub_cache(cache_dir, repo_id, files):
    """Writes ``files`` ({name: bytes or source path}) as huggingface_hub's cache keeps a
    downloaded snapshot of ``repo_id`` (``models--org--name/snapshots/<commit>/`` + ``refs/main``)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"))
    snap = os.path.join(repo, "snapshots", commit)
    os.makedirs(snap, exist_ok=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(commit)
    for name, content in files.items():
        if not isinstance(content, bytes):
            with open(content, "rb") as f:
                content = f.read()
        with open(os.path.join(snap, name), "wb") as f:
            f.write(content)
    return snap


def torch_save(state, path):
    """``torch.save`` of a numpy state dict under the authors' ``"model"`` wrapper."""
    import torch

    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, path)
    return path
