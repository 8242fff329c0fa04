#!/usr/bin/env python3
"""Connect to a cluster with kt from Python, fetch the echo app's /hello through the
session's HTTP proxy by its cluster name, print the answer, close.

    pip install ./bindings/python
    python examples/python/connect.py --namespace demo [--kubeconfig FILE]

The namespace needs the echo app (testbed/examples/echo.yaml) and kt's Role file
(kt-core/rbac/connect.yaml); the lab's testbed/test-namespace sets up both.
"""

import argparse
import json
import sys
import urllib.request

import ktconnect


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--namespace", "-n", help="namespace (default: the kubeconfig context's)")
    args = parser.parse_args()

    try:
        session = ktconnect.Session.connect(
            kubeconfig=args.kubeconfig,
            namespace=args.namespace,
            on_event=lambda event: print(f"kt: {event}", file=sys.stderr),
        )
    except ktconnect.KtError as e:
        print(f"cannot connect: {e}", file=sys.stderr)
        return 1

    with session:
        url = f"http://echo.{session.namespace}/hello"
        proxy = urllib.request.ProxyHandler({"http": session.http_proxy_url})
        with urllib.request.build_opener(proxy).open(url, timeout=30) as response:
            reply = json.load(response)
        print(f"GET {url} via {session.http_proxy_url}: served by pod {reply['pod']}")
        print(json.dumps(reply, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
