#!/usr/bin/env python3
"""Take over a workload's traffic with kt from Python: pods calling the target's
Service reach a small HTTP server in this process, until Ctrl-C (or SIGTERM); then the
cluster is put back exactly as it was.

    pip install ./bindings/python
    python examples/python/swap.py --namespace demo [--kubeconfig FILE] \
        [--target deploy/echo] [--remote 80] [--mode selector|scale]

The namespace needs the target (the lab's echo app: testbed/examples/echo.yaml) and
kt's Roles kt-vpn and kt-inbound (kt-core/rbac/vpn.yaml, inbound.yaml); the lab's
`testbed/test-namespace create demo --role inbound` sets up both.
"""

import argparse
import http.server
import signal
import sys
import threading

import ktconnect


def serve(message: bytes) -> http.server.ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 (a free port) answering every GET with `message`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("content-length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)

        def log_message(self, fmt: str, *args: object) -> None:
            print(f"local: {self.address_string()} {fmt % args}", file=sys.stderr)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--namespace", "-n", help="namespace (default: the kubeconfig context's)")
    parser.add_argument("--target", default="deploy/echo", help="deploy/NAME, sts/NAME, svc/NAME or a name")
    parser.add_argument("--remote", default="80", help="the target's port to take over (number or name)")
    parser.add_argument("--mode", default="selector", choices=["selector", "scale"])
    parser.add_argument("--message", default="hello from this laptop\n", help="what the local server answers")
    args = parser.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    server = serve(args.message.encode())
    port = server.server_address[1]
    try:
        with ktconnect.Session.connect(kubeconfig=args.kubeconfig, namespace=args.namespace) as session:
            with session.swap(args.target, f"{port}:{args.remote}", mode=args.mode) as swap:
                print(
                    f"swapped {swap.target} ({swap.mode} mode, Services {', '.join(swap.services) or '-'}): "
                    f"port {swap.ports[0][1]} now reaches 127.0.0.1:{port}; Ctrl-C to restore",
                    flush=True,
                )
                stop.wait()
                print(f"restoring after {swap.connections} connection(s)", flush=True)
            print("restored", flush=True)
    except ktconnect.KtError as e:
        print(f"error ({e.kind}): {e}", file=sys.stderr)
        return 1
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
