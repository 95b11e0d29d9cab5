"""The VLM client and program writer against a local chat-completions server with recorded answers.

The server listens on 127.0.0.1 (port chosen by the OS) and answers from the JSON files in
``tests/data/vlm_responses``, so the real ``urllib`` code path (request building, headers, image
data URL, HTTP errors, timeouts, JSON parsing) is exercised."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from embodied_steer.core.errors import ConfigError
from embodied_steer.vls.defaults import default_program
from embodied_steer.vls.errors import NoProgramInResponse, VLMError
from embodied_steer.vls.keypoints import keypoint_legend
from embodied_steer.vls.limits import SandboxLimits
from embodied_steer.vls.vlm import VLMClient, VLMConfig
from embodied_steer.vls.writer import ProgramWriter, candidate_programs, extract_program

RESPONSES = Path(__file__).parent / "data" / "vlm_responses"
NO_PROBE = SandboxLimits(probe=False)
LEGEND = keypoint_legend("Lift")
KEY_ENV = "EMBODIED_STEER_TEST_VLM_KEY"


class FakeChatServer:
    """A chat-completions endpoint on 127.0.0.1 that replays recorded responses in order."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                server.requests.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
                name = server.script[min(len(server.requests) - 1, len(server.script) - 1)]
                record = json.loads((RESPONSES / f"{name}.json").read_text())
                time.sleep(record.get("delay_s", 0.0))
                payload = record["raw"].encode() if "raw" in record else json.dumps(record["body"]).encode()
                try:
                    self.send_response(record["status"])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server():
    with FakeChatServer() as s:
        yield s


def _client(server: FakeChatServer, tmp_path: Path, **kwargs) -> VLMClient:
    kwargs.setdefault("retries", 0)
    return VLMClient(VLMConfig(base_url=server.base_url, model="test-vlm", api_key_env=KEY_ENV,
                               cache_dir=tmp_path / "cache", **kwargs))


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (32, 48, 3), dtype=np.uint8)


def test_success_exercises_the_real_request_path(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    server.script = ["lift_program"]
    writer = ProgramWriter(default_program("Lift"), client=_client(server, tmp_path))  # probe subprocess on
    program = writer.write("lift the red cube", LEGEND, _image())
    assert writer.program is program and program.num_stages() == 2 and "LIFT = 0.12" in program.source
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test-123"
    body = req["json"]
    assert body["model"] == "test-vlm" and body["messages"][0]["role"] == "system"
    text, image = body["messages"][1]["content"]
    assert "lift the red cube" in text["text"] and "0: cube — centre of the red cube" in text["text"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    from PIL import Image

    png = base64.b64decode(image["image_url"]["url"].split(",", 1)[1])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), _image())
    reward = program(1, torch.tensor([[0.0, 0.0, 0.83], [0.0, 0.0, 0.8]]), torch.zeros(2, 4, 3))
    assert reward.shape == (2,)
    cached = list((tmp_path / "cache").glob("*.json"))
    assert len(cached) == 1 and "sk-test-123" not in cached[0].read_text()


def test_cache_hit_sends_one_request(server, tmp_path):
    server.script = ["lift_program"]
    client = _client(server, tmp_path)
    first = ProgramWriter(client=client, limits=NO_PROBE).write("lift the red cube", LEGEND, _image())
    again = ProgramWriter(client=client, limits=NO_PROBE).write("lift the red cube", LEGEND, _image())
    fresh_client = ProgramWriter(client=_client(server, tmp_path), limits=NO_PROBE).write("lift the red cube", LEGEND, _image())
    assert first.source == again.source == fresh_client.source
    assert len(server.requests) == 1 and client.requests_sent == 1
    ProgramWriter(client=client, limits=NO_PROBE).write("lift the red cube", LEGEND, _image(seed=1))
    assert len(server.requests) == 2  # another image is another key


def test_no_program_keeps_the_previous_one(server, tmp_path):
    server.script = ["no_program"]
    default = default_program("Lift")
    writer = ProgramWriter(default, client=_client(server, tmp_path), limits=NO_PROBE, repair_attempts=1)
    with pytest.raises(NoProgramInResponse, match="no ```python code block.*keeping the previous program"):
        writer.write("lift the red cube", LEGEND, _image())
    assert writer.program is default
    assert len(server.requests) == 2  # one repair request with the error
    repair = server.requests[1]["json"]["messages"]
    assert repair[-2]["role"] == "assistant" and "no ```python code block" in repair[-1]["content"]


def test_hostile_program_in_response_is_rejected_and_previous_kept(server, tmp_path):
    server.script = ["hostile_program"]
    default = default_program("Lift")
    writer = ProgramWriter(default, client=_client(server, tmp_path), limits=NO_PROBE, repair_attempts=0)
    with pytest.raises(NoProgramInResponse, match="'import os'"):
        writer.write("lift the red cube", LEGEND, _image())
    assert writer.program is default and len(server.requests) == 1
    assert "sandbox violation" in writer.last_error


def test_repair_round_trip_replaces_the_program(server, tmp_path):
    server.script = ["hostile_program", "lift_program"]
    writer = ProgramWriter(default_program("Lift"), client=_client(server, tmp_path), limits=NO_PROBE)
    program = writer.write("lift the red cube", LEGEND, _image())
    assert writer.program is program and "LIFT = 0.12" in program.source
    assert len(server.requests) == 2
    assert "import os" in server.requests[1]["json"]["messages"][-1]["content"]


@pytest.mark.parametrize("script, message", [
    ("http_500", "HTTP 500.*server had an error"),
    ("http_401", "HTTP 401.*Incorrect API key"),
    ("malformed_json", "malformed JSON"),
    ("no_choices", "without choices"),
])
def test_endpoint_failures_raise_vlm_errors_and_keep_the_program(server, tmp_path, script, message):
    server.script = [script]
    default = default_program("Lift")
    writer = ProgramWriter(default, client=_client(server, tmp_path), limits=NO_PROBE)
    with pytest.raises(VLMError, match=message):
        writer.write("lift the red cube", LEGEND, _image())
    assert writer.program is default
    assert not list((tmp_path / "cache").glob("*.json"))  # failures are not cached


def test_server_errors_are_retried_with_backoff(server, tmp_path):
    server.script = ["http_500", "http_500", "lift_program"]
    client = _client(server, tmp_path, retries=2, retry_backoff_s=0.01)
    assert "LIFT = 0.12" in client.ask("x")
    assert len(server.requests) == 3
    server.requests.clear()
    server.script = ["http_500"]
    with pytest.raises(VLMError, match=r"HTTP 500.*after 2 attempt"):
        _client(server, tmp_path, retries=1, retry_backoff_s=0.01).ask("y")
    server.requests.clear()
    server.script = ["http_401"]
    with pytest.raises(VLMError, match="HTTP 401"):
        _client(server, tmp_path, retries=3, retry_backoff_s=0.01).ask("z")
    assert len(server.requests) == 1  # client errors are not retried


def test_timeout_raises_a_clear_error(server, tmp_path):
    server.script = ["slow_lift_program"]
    client = _client(server, tmp_path, timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(VLMError, match=r"did not answer within 0.3 s"):
        client.ask("hello")
    assert time.monotonic() - start < 30  # hang guard only


def test_unreachable_endpoint(tmp_path):
    with FakeChatServer() as s:
        url = s.base_url
    client = VLMClient(VLMConfig(base_url=url, model="m", cache_dir=None, timeout_s=5))
    with pytest.raises(VLMError, match="cannot reach|connection"):
        client.ask("hello")


def test_content_as_parts_and_program_choice(server, tmp_path):
    server.script = ["content_parts"]
    text = _client(server, tmp_path).ask("x")
    assert extract_program(text, limits=NO_PROBE).num_stages() == 1
    two = json.loads((RESPONSES / "two_blocks.json").read_text())["body"]["choices"][0]["message"]["content"]
    assert len(candidate_programs(two)) == 2  # python blocks only; the ```text block is skipped
    assert "helper" not in extract_program(two, limits=NO_PROBE).source  # first valid block wins
    assert candidate_programs("def stage_1(keypoints, trajectory):\n    return trajectory.sum(dim=(1, 2))\n")
    assert candidate_programs("no code here") == []


def test_without_a_vlm_the_default_stays(monkeypatch):
    monkeypatch.delenv("EMBODIED_STEER_VLM_BASE_URL", raising=False)
    writer = ProgramWriter.for_task("PickPlaceCan")
    assert writer.client is None and writer.program.num_stages() == 3
    with pytest.raises(NoProgramInResponse, match="no VLM is configured"):
        writer.write("pick up the can", keypoint_legend("PickPlaceCan"))
    assert writer.program.num_stages() == 3


def test_config_from_env(tmp_path):
    assert VLMConfig.from_env({}) is None
    cfg = VLMConfig.from_env({"EMBODIED_STEER_VLM_BASE_URL": "http://127.0.0.1:11434/v1",
                              "EMBODIED_STEER_VLM_MODEL": "llava", "EMBODIED_STEER_VLM_API_KEY_ENV": "OPENAI_API_KEY",
                              "EMBODIED_STEER_VLM_TIMEOUT": "7.5", "EMBODIED_STEER_VLM_CACHE_DIR": str(tmp_path)})
    assert cfg.endpoint == "http://127.0.0.1:11434/v1/chat/completions"
    assert cfg.api_key_env == "OPENAI_API_KEY" and cfg.timeout_s == 7.5 and cfg.cache_dir == tmp_path
    assert VLMConfig(base_url="http://h/v1/chat/completions", model="m").endpoint == "http://h/v1/chat/completions"
    with pytest.raises(ConfigError, match="MODEL"):
        VLMConfig.from_env({"EMBODIED_STEER_VLM_BASE_URL": "http://127.0.0.1:1/v1"})
    with pytest.raises(ConfigError, match="http"):
        VLMConfig(base_url="file:///etc/passwd", model="m")
    with pytest.raises(ConfigError, match="TIMEOUT"):
        VLMConfig.from_env({"EMBODIED_STEER_VLM_BASE_URL": "http://h", "EMBODIED_STEER_VLM_MODEL": "m",
                            "EMBODIED_STEER_VLM_TIMEOUT": "soon"})


def test_command_line_writes_image_keypoints_and_vlm_program(server, tmp_path, monkeypatch):
    from embodied_steer.vls.__main__ import main

    server.script = ["lift_program"]
    monkeypatch.setenv("EMBODIED_STEER_VLM_BASE_URL", server.base_url)
    monkeypatch.setenv("EMBODIED_STEER_VLM_MODEL", "test-vlm")
    monkeypatch.setenv("EMBODIED_STEER_VLM_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["--task", "Lift", "--seed", "2", "--size", "64", "--out-dir", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    assert "LIFT = 0.12" in (out / "program.py").read_text()
    record = json.loads((out / "keypoints.json").read_text())
    assert [k["name"] for k in record["keypoints"]] == ["cube", "table"]
    from PIL import Image

    assert Image.open(out / "keypoints.png").size == (64, 64)
    sent = server.requests[0]["json"]["messages"][1]["content"]
    assert "lift the red cube" in sent[0]["text"]
    png = base64.b64decode(sent[1]["image_url"]["url"].split(",", 1)[1])
    assert Image.open(io.BytesIO(png)).size == (64, 64)


def test_probe_uses_the_legend_size(server, tmp_path):
    # keypoints[3] in a two-keypoint task fails in the probe subprocess; the repair turn says why.
    server.script = ["keypoint_out_of_range", "lift_program"]
    writer = ProgramWriter(default_program("Lift"), client=_client(server, tmp_path))
    program = writer.write("lift the red cube", LEGEND, _image())
    assert "LIFT = 0.12" in program.source and len(server.requests) == 2
    repair = server.requests[1]["json"]["messages"][-1]["content"]
    assert "probe inputs (keypoints (2, 3)" in repair and "index 3" in repair
