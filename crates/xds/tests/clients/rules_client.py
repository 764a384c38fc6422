"""A proxyless gRPC client (grpcio's xds resolver) measuring what rules do.

Usage: GRPC_XDS_BOOTSTRAP=FILE rules_client.py. Reads one JSON command per
line on standard input: {"target": "xds:///HOST:PORT", "calls": N,
"metadata": {...}, "deadline": SECONDS}; makes N calls of
/sextant.test.Echo/Say on a channel kept per target; prints one JSON line:
{"counts": {NAME or STATUS: n}, "max_ms": slowest call, "min_ms": fastest}.
"""
import json
import sys
import time

import grpc


def main():
    channels = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        target = cmd["target"]
        if target not in channels:
            channels[target] = grpc.insecure_channel(target).unary_unary("/sextant.test.Echo/Say")
        say = channels[target]
        metadata = list(cmd.get("metadata", {}).items())
        counts, slowest, fastest = {}, 0.0, None
        for _ in range(cmd["calls"]):
            start = time.monotonic()
            try:
                deadline = cmd.get("deadline", 5)
                key = say(b"hi", timeout=deadline or None, metadata=metadata).decode()
            except grpc.RpcError as e:
                key = e.code().name
            took = (time.monotonic() - start) * 1000
            slowest = max(slowest, took)
            fastest = took if fastest is None else min(fastest, took)
            counts[key] = counts.get(key, 0) + 1
        print(json.dumps({"counts": counts, "max_ms": slowest, "min_ms": fastest or 0}), flush=True)


if __name__ == "__main__":
    main()
