"""N slow clients against ``apigen-envs serve`` in its own process: how many file handles, for how long.

Each client connects and sends a request head that never ends (slowloris). Before issue 18 every such
socket stayed open for good (1,000 clients held 1,009 handles); now the server answers 408 and closes each
one once ``--header-timeout`` has passed, and keeps serving meanwhile.

Run: python benchmarks/slow_clients.py [CLIENTS] [HEADER_TIMEOUT_S]
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(clients: int = 1000, header_timeout_s: float = 3.0) -> dict[str, float]:
    """Run the attack and return its figures (handles before, during and after; seconds to recover)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "apigen_envs.cli", "serve", "--port", str(port), "--log-level", "warning"]
    cmd += ["--header-timeout", str(header_timeout_s), "--max-connections", str(clients + 100)]
    server = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)

        def handles() -> int:
            return len(os.listdir(f"/proc/{server.pid}/fd"))

        baseline = handles()
        socks = []
        for _ in range(clients):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /sessions HTTP/1.1\r\nHost: x\r\n")
            socks.append(sock)
        started = time.monotonic()
        during = handles()
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).status  # noqa: S310
        while handles() > baseline + 5 and time.monotonic() - started < 120:
            time.sleep(0.1)
        recovered_s = time.monotonic() - started
        answered = 0
        for sock in socks:
            sock.settimeout(1.0)
            with contextlib.suppress(OSError):
                answered += sock.recv(64).startswith(b"HTTP/1.1 408")
            sock.close()
        return {
            "clients": clients,
            "handles_baseline": baseline,
            "handles_during": during,
            "handles_after": handles(),
            "seconds_to_recover": round(recovered_s, 1),
            "answered_408": answered,
            "healthz_during_attack": health,
        }
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    args = sys.argv[1:]
    print(main(int(args[0]) if args else 1000, float(args[1]) if len(args) > 1 else 3.0))
