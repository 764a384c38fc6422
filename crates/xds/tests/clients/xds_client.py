"""A proxyless gRPC client (grpcio's xds resolver) for Sextant's tests.

Usage: GRPC_XDS_BOOTSTRAP=FILE xds_client.py TARGET PHASE [PHASE...]
Each PHASE is a comma-separated set of backend names. The client calls
TARGET repeatedly; a phase is met when its last 12 answers came from exactly
that set. It prints "ok PHASE" per phase met, "fail ..." and exits 1 if a
phase is not met within 30 s. A phase written NAMES@TARGET2 first waits for a
line on standard input, then calls TARGET2 on a new channel (a target the
client has not asked the control plane about before).
"""
import collections
import sys
import time

import grpc


def main():
    target, phases = sys.argv[1], sys.argv[2:]
    channel = grpc.insecure_channel(target)
    say = channel.unary_unary("/sextant.test.Echo/Say")
    for phase in phases:
        names, _, other = phase.partition("@")
        if other:
            sys.stdin.readline()
            channel = grpc.insecure_channel(other)
            say = channel.unary_unary("/sextant.test.Echo/Say")
        want = set(names.split(","))
        recent = collections.deque(maxlen=12)
        deadline = time.time() + 30
        last_error = ""
        while True:
            try:
                recent.append(say(b"hi", timeout=5).decode())
            except grpc.RpcError as e:
                last_error = f"{e.code()}: {e.details()}"
                time.sleep(0.1)
            if len(recent) == recent.maxlen and set(recent) == want:
                print(f"ok {phase}", flush=True)
                break
            if time.time() > deadline:
                print(f"fail {phase}: recent={list(recent)} error={last_error}", flush=True)
                sys.exit(1)
            time.sleep(0.02)


if __name__ == "__main__":
    main()
