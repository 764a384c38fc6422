"""Drives the Consul double with py-consul, an independent client, and
prints what it saw as JSON. Usage: py_consul_check.py HOST PORT"""
import json
import sys
import threading
import time

import consul


def main():
    c = consul.Consul(host=sys.argv[1], port=int(sys.argv[2]))
    out = {}
    c.agent.service.register(
        "web", service_id="web-1", address="10.0.0.1", port=8080, tags=["v1"],
        meta={"protocol": "http"}, check=consul.Check.ttl("10s"), weights={"Passing": 3, "Warning": 1},
    )
    out["services"] = c.catalog.services()[1]
    idx, nodes = c.health.service("web")
    out["initial_status"] = nodes[0]["Checks"][0]["Status"]
    out["initial_passing"] = len(c.health.service("web", passing=True)[1])
    svc = nodes[0]["Service"]
    out["service"] = {k: svc[k] for k in ("ID", "Service", "Address", "Port", "Tags", "Meta", "Weights")}
    out["catalog_port"] = c.catalog.service("web")[1][0]["ServicePort"]

    # A blocking query returns when the service changes...
    def flip():
        time.sleep(0.5)
        c.agent.check.ttl_pass("service:web-1")

    threading.Thread(target=flip).start()
    t0 = time.time()
    idx2, nodes2 = c.health.service("web", index=idx, wait="20s")
    out["woke_after_s"] = time.time() - t0
    out["index_grew"] = int(idx2) > int(idx)
    out["status_after"] = nodes2[0]["Checks"][0]["Status"]
    out["passing_after"] = len(c.health.service("web", passing=True)[1])

    # ...and after its wait when nothing changes, with the same index.
    t0 = time.time()
    idx3, _ = c.health.service("web", index=idx2, wait="1s")
    out["timeout_after_s"] = time.time() - t0
    out["timeout_same_index"] = idx3 == idx2

    c.agent.service.deregister("web-1")
    out["services_after_deregister"] = c.catalog.services()[1]

    # Config entries: written, read one and as a list, replaced with cas,
    # deleted.
    splits = {"Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]}
    out["config_set"] = c.config.set("service-splitter", "web", splits)
    entry = c.config.get("service-splitter", "web")
    out["config_get"] = {k: entry[k] for k in ("Kind", "Name", "Splits")}
    out["config_indexes"] = entry["CreateIndex"] > 0 and entry["ModifyIndex"] >= entry["CreateIndex"]
    out["config_cas_stale"] = c.config.set("service-splitter", "web", splits, cas=entry["ModifyIndex"] + 100)
    out["config_cas_current"] = c.config.set("service-splitter", "web", splits, cas=entry["ModifyIndex"])
    out["config_list"] = [e["Name"] for e in c.config.list("service-splitter")]
    out["config_delete"] = c.config.delete("service-splitter", "web")
    out["config_list_after"] = c.config.list("service-splitter")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
