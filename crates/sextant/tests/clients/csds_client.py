"""A CSDS client (grpcio with Envoy's own protos from xds-protos).

Usage: csds_client.py ADDR [NODE_ID_PREFIX]
Calls envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus
once (node_id prefix matcher when given), then StreamClientStatus with one
request, and prints one JSON line: {"fetch": SUMMARY, "stream": SUMMARY},
where SUMMARY maps each node id to its resources: [type_url, name,
version_info, config_status, client_status, error, the contents' type]. On
an RPC error it prints {"code": ..., "details": ...}. With CSDS_TOKEN in the
environment, it is sent as a bearer token.
"""
import json
import os
import sys

import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as shared
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2


def summary(response):
    out = {}
    for config in response.config:
        rows = []
        for g in config.generic_xds_configs:
            rows.append([
                g.type_url,
                g.name,
                g.version_info,
                csds_pb2.ConfigStatus.Name(g.config_status),
                shared.ClientResourceStatus.Name(g.client_status),
                g.error_state.details,
                g.xds_config.type_url,
            ])
        out[config.node.id] = rows
    return out


def main():
    addr = sys.argv[1]
    request = csds_pb2.ClientStatusRequest()
    if len(sys.argv) > 2:
        request.node_matchers.append(
            node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(prefix=sys.argv[2]))
        )
    with grpc.insecure_channel(addr) as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        token = os.environ.get("CSDS_TOKEN")
        metadata = [("authorization", f"Bearer {token}")] if token else None
        try:
            fetched = stub.FetchClientStatus(request, timeout=10, metadata=metadata)
            streamed = next(iter(stub.StreamClientStatus(
                iter([request]), timeout=10, metadata=metadata)))
        except grpc.RpcError as e:
            print(json.dumps({"code": e.code().name, "details": e.details()}))
            return
    print(json.dumps({"fetch": summary(fetched), "stream": summary(streamed)}))


if __name__ == "__main__":
    main()
