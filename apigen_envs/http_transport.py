"""HTTP transports for OpenAI-compatible chat completions: one POST of a JSON body, one reply.

:class:`~apigen_envs.llm.OpenAIClient` builds the request body and parses the reply itself (see
:mod:`apigen_envs.llm`); a transport only moves bytes, so every transport gives the same parsed results
and the same error classification. Failures come back as two exception kinds the client classifies:
:class:`TransportTimeout` and :class:`TransportConnectionError` (refused, dropped, reset, truncated).

Transports (chosen with ``LLMConfig.transport`` / ``--transport``):

* ``aiohttp`` (default): aiohttp's connector keeps idle connections per host in a queue, so taking one
  costs the same with 8 or 512 open; its HTTP parser is in C. The collector's cost per call stays flat
  as concurrency grows, where httpcore's pool (under httpx and the ``openai`` package) checks every open
  connection on each request.
* ``httpx``: an ``AsyncClient`` of ``httpx2`` (the openai package's fork; else ``httpx``) with a bounded
  pool (``max_connections``); kept for comparison and for installs without aiohttp.
* ``openai``: the ``openai`` package's own client (handled in :mod:`apigen_envs.llm`, not here).

Blocking calls (``complete``) go through an ``httpx.Client`` for both ``aiohttp`` and ``httpx``: aiohttp has
no blocking API, and the sync path is not where concurrency matters.

Async transports belong to one event loop; :func:`close_with_loop` closes one when its loop's
``asyncio.run`` ends, so a collector run never leaves an unclosed session behind.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, Protocol, runtime_checkable

TransportKind = Literal["aiohttp", "httpx", "openai"]
"""How :class:`~apigen_envs.llm.OpenAIClient` talks HTTP."""

TRANSPORTS: tuple[TransportKind, ...] = ("aiohttp", "httpx", "openai")
"""The transport names, default first."""


class TransportError(Exception):
    """A request got no HTTP reply (base class; the cause is chained)."""


class TransportTimeout(TransportError):
    """Connecting, waiting for a pooled connection, sending or reading took longer than the timeout."""


class TransportConnectionError(TransportError):
    """The connection could not be made or broke before a whole reply arrived (refused, reset, dropped)."""


@dataclass(frozen=True, slots=True)
class HTTPReply:
    """One HTTP reply.

    Attributes:
        status: The status code.
        headers: The headers (case-insensitive lookup: the libraries' own header maps).
        body: The body, read in full.

    """

    status: int
    headers: Mapping[str, str]
    body: bytes


@runtime_checkable
class AsyncTransport(Protocol):
    """POSTs a JSON body and returns the whole reply, on the event loop it was created on."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HTTPReply:
        """Send one request.

        Args:
            url: The full URL.
            body: The request body (JSON).
            headers: Request headers.

        Returns:
            The reply, whatever its status.

        Raises:
            TransportTimeout: When the timeout passed.
            TransportConnectionError: When no whole reply arrived.

        """
        ...

    async def aclose(self) -> None:
        """Close the pooled connections."""
        ...


@runtime_checkable
class SyncTransport(Protocol):
    """Blocking twin of :class:`AsyncTransport`."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HTTPReply:
        """Send one request (see :meth:`AsyncTransport.post`)."""
        ...

    def close(self) -> None:
        """Close the pooled connections."""
        ...


def _httpx() -> ModuleType:
    """``httpx2`` (installed with the ``openai`` package), else ``httpx``: the same API.

    httpx2 first: with 64 requests in flight it measured 1.5 ms of client CPU per call against 5-6 ms for
    httpx 0.29, whose pool and two writes per request (head, then body) cost more.
    """
    for name in ("httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("the httpx transport needs httpx (pip install httpx)")


def _env_proxy(url: str) -> str | None:
    """The proxy the environment asks for ``url`` (``$HTTP_PROXY``, ``$NO_PROXY``...), looked up once."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(parts.scheme or "http")


# ---------------------------------------------------------------------------------------------- aiohttp
class AiohttpTransport:
    """An :class:`AsyncTransport` over one ``aiohttp.ClientSession``.

    Args:
        base_url: The server's base URL (its proxy, if the environment names one, is looked up once here
            rather than on every request).
        max_connections: Open connections at most (None: no limit).
        timeout_s: Limit on the whole request (connecting, sending, the reply). A chat completion that is
            not streamed sends nothing until it is done, so this is the ``openai`` client's read timeout in
            effect; one timer per request instead of one re-armed on every chunk read (measured: ~15% less
            client CPU per call at 512 in flight).

    """

    def __init__(self, base_url: str, *, max_connections: int | None, timeout_s: float) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        connector = aiohttp.TCPConnector(limit=max_connections or 0, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            # Model servers set no cookies worth keeping; the dummy jar skips cookie parsing per reply.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
        )
        self._proxy = _env_proxy(base_url)
        import yarl

        self._yarl = yarl
        self._urls: dict[str, Any] = {}

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HTTPReply:
        """Send one request (see :meth:`AsyncTransport.post`)."""
        aiohttp = self._aiohttp
        target = self._urls.get(url)
        if target is None:
            # A parsed URL, kept: aiohttp would parse the same string again on every request.
            target = self._urls[url] = self._yarl.URL(url)
        try:
            async with self._session.post(target, data=body, headers=headers, proxy=self._proxy) as response:
                data = await response.read()
                return HTTPReply(response.status, response.headers, data)
        except TimeoutError as exc:  # aiohttp's ServerTimeoutError and ConnectionTimeoutError are TimeoutErrors
            raise TransportTimeout(str(exc)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportConnectionError(str(exc)) from exc

    async def aclose(self) -> None:
        """Close the session and its connections."""
        await self._session.close()


# ---------------------------------------------------------------------------------------------- httpx
def _httpx_limits(httpx: ModuleType, max_connections: int | None) -> Any:
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)


class HttpxTransport:
    """An :class:`AsyncTransport` over one ``httpx.AsyncClient`` (HTTP/1.1, bounded pool).

    Args:
        base_url: The server's base URL (unused: httpx resolves proxies once per client).
        max_connections: Open connections at most (None: no limit). httpcore's pool scans its connections on
            every request, so a bound near 128 keeps that scan cheap at high concurrency.
        timeout_s: Limit on connecting, waiting for a pooled connection, writing and each read.

    """

    def __init__(self, base_url: str, *, max_connections: int | None, timeout_s: float) -> None:
        httpx = _httpx()
        self._httpx = httpx
        self._client = httpx.AsyncClient(
            limits=_httpx_limits(httpx, max_connections), timeout=httpx.Timeout(timeout_s), follow_redirects=True
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HTTPReply:
        """Send one request (see :meth:`AsyncTransport.post`)."""
        httpx = self._httpx
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransportTimeout(str(exc)) from exc
        except httpx.RequestError as exc:
            raise TransportConnectionError(str(exc)) from exc
        return HTTPReply(response.status_code, response.headers, response.content)

    async def aclose(self) -> None:
        """Close the client and its connections."""
        await self._client.aclose()


class HttpxSyncTransport:
    """A :class:`SyncTransport` over one ``httpx.Client`` (the blocking path of both async transports).

    Args:
        base_url: The server's base URL (unused).
        max_connections: Open connections at most (None: no limit).
        timeout_s: Limit on connecting, waiting for a pooled connection, writing and each read.

    """

    def __init__(self, base_url: str, *, max_connections: int | None, timeout_s: float) -> None:
        httpx = _httpx()
        self._httpx = httpx
        self._client = httpx.Client(
            limits=_httpx_limits(httpx, max_connections), timeout=httpx.Timeout(timeout_s), follow_redirects=True
        )

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HTTPReply:
        """Send one request (see :meth:`AsyncTransport.post`)."""
        httpx = self._httpx
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransportTimeout(str(exc)) from exc
        except httpx.RequestError as exc:
            raise TransportConnectionError(str(exc)) from exc
        return HTTPReply(response.status_code, response.headers, response.content)

    def close(self) -> None:
        """Close the client and its connections."""
        self._client.close()


# ---------------------------------------------------------------------------------------------- factories
def async_transport(
    kind: TransportKind, base_url: str, *, max_connections: int | None, timeout_s: float
) -> AsyncTransport:
    """A new async transport of the given kind for the running event loop.

    Args:
        kind: ``"aiohttp"`` or ``"httpx"`` (``"openai"`` is the openai package's client, not a transport).
        base_url: The server's base URL.
        max_connections: Open connections at most (None: no limit).
        timeout_s: The per-request timeout.

    Returns:
        The transport.

    Raises:
        ValueError: For an unknown kind.
        ImportError: When the library is not installed.

    """
    if kind == "aiohttp":
        return AiohttpTransport(base_url, max_connections=max_connections, timeout_s=timeout_s)
    if kind == "httpx":
        return HttpxTransport(base_url, max_connections=max_connections, timeout_s=timeout_s)
    raise ValueError(f"unknown HTTP transport {kind!r}; expected one of {', '.join(TRANSPORTS[:2])}")


def sync_transport(
    kind: TransportKind, base_url: str, *, max_connections: int | None, timeout_s: float
) -> SyncTransport:
    """A new blocking transport (httpx for both ``"aiohttp"`` and ``"httpx"``; see the module docstring).

    Args:
        kind: ``"aiohttp"`` or ``"httpx"``.
        base_url: The server's base URL.
        max_connections: Open connections at most (None: no limit).
        timeout_s: The per-request timeout.

    Returns:
        The transport.

    Raises:
        ValueError: For an unknown kind.

    """
    if kind not in ("aiohttp", "httpx"):
        raise ValueError(f"unknown HTTP transport {kind!r}; expected one of {', '.join(TRANSPORTS[:2])}")
    return HttpxSyncTransport(base_url, max_connections=max_connections, timeout_s=timeout_s)


async def _close_at_shutdown(transport: AsyncTransport) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await transport.aclose()


async def close_with_loop(transport: AsyncTransport) -> AsyncIterator[None]:
    """Arrange for ``transport`` to close when the running loop shuts down its async generators.

    ``asyncio.run`` (and pytest-asyncio's loops) finalise live async generators before closing the loop; a
    started generator whose ``finally`` closes the transport therefore closes it cleanly, with no
    "unclosed session" warning, even when nobody calls ``aclose``.

    Args:
        transport: The transport.

    Returns:
        The started generator: keep a reference to it as long as the transport lives.

    """
    closer = _close_at_shutdown(transport)
    await closer.__anext__()
    return closer


__all__ = [
    "TRANSPORTS",
    "AiohttpTransport",
    "AsyncTransport",
    "HTTPReply",
    "HttpxSyncTransport",
    "HttpxTransport",
    "SyncTransport",
    "TransportConnectionError",
    "TransportError",
    "TransportKind",
    "TransportTimeout",
    "async_transport",
    "close_with_loop",
    "sync_transport",
]
