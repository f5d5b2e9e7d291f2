"""A sluice transform: keeps the flows to one destination port and writes a small record for
each. Config: {"port": 443} (the default).

`python3 -m unittest` runs test_transform.py natively; `sluice guest build transform.py`
makes the component. `flows` are dicts as the Skydive analyzer writes them (PascalCase keys);
each record is a dict whose keys, in order, are the record's fields.
"""

import sluice


def init(config):
    """Checks the pipeline's `transform.wasm.config`; what it returns is `transform`'s config."""
    port = (config or {}).get("port", 443)
    if not isinstance(port, int) or isinstance(port, bool):
        raise sluice.GuestError(f"port must be an integer, not {port!r}")
    return {"port": port}


def transform(flows, config):
    out = []
    for flow in flows:
        transport = flow.get("Transport")
        # A flow without a record is dropped (counted as `transform`).
        if not transport or transport.get("B") != config["port"]:
            continue
        network = flow.get("Network") or {}
        metric = flow.get("Metric") or {}
        out.append(
            {
                "UUID": flow.get("UUID", ""),
                "Src": network.get("A", ""),
                "Dst": network.get("B", ""),
                "Port": transport["B"],
                "Bytes": metric.get("ABBytes", 0) + metric.get("BABytes", 0),
            }
        )
    # Into the pipeline's guest log (GET /v1/pipelines/{id}/logs). Every line counts against
    # the log's budget: drop this once the guest works.
    print(f"kept {len(out)} of {len(flows)} flows")
    return out
