#!/usr/bin/env python3
"""Bench of the Python binding: how long Session.connect and one resolve take.

    python benches/bindings/bench.py --kubeconfig K --namespace NS --runs N

For each run: connect (blocking API), resolve `echo` once, close. Prints exactly one
line per measurement on stdout, `connect <seconds>` and `resolve <seconds>` (floats,
time.perf_counter around the ktconnect call only); anything else goes to stderr.
"""

import argparse
import sys
import time

import ktconnect


def main() -> int:
    parser = argparse.ArgumentParser(description="time ktconnect's connect and resolve")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    for _ in range(args.runs):
        start = time.perf_counter()
        session = ktconnect.Session.connect(kubeconfig=args.kubeconfig, namespace=args.namespace)
        connected = time.perf_counter()
        try:
            print(f"connect {connected - start:.6f}", flush=True)
            start = time.perf_counter()
            ips = session.resolve("echo")
            resolved = time.perf_counter()
            print(f"resolve {resolved - start:.6f}", flush=True)
            if not ips:
                print("bench: echo resolved to no address", file=sys.stderr)
                return 1
        finally:
            session.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ktconnect.KtError as e:
        print(f"bench: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
