// A sluice transform: keeps the flows to one destination port and writes a small record for
// each. Config: {"port": 443} (the default).
//
// `node --test` runs transform.test.mjs natively; `sluice guest build transform.js` makes the
// component. `flows` are objects as the Skydive analyzer writes them (PascalCase keys); each
// record is an object whose keys, in order, are the record's fields. `sluice` is a global.

// Checks the pipeline's `transform.wasm.config`; what it returns is `transform`'s config.
export function init(config) {
  const port = config?.port ?? 443;
  if (!Number.isInteger(port)) {
    throw new sluice.GuestError(`port must be an integer, not ${JSON.stringify(port)}`);
  }
  return { port };
}

export function transform(flows, config) {
  const out = [];
  for (const flow of flows) {
    const transport = flow.Transport;
    // A flow without a record is dropped (counted as `transform`).
    if (!transport || transport.B !== config.port) continue;
    const network = flow.Network ?? {};
    const metric = flow.Metric ?? {};
    out.push({
      UUID: flow.UUID ?? '',
      Src: network.A ?? '',
      Dst: network.B ?? '',
      Port: transport.B,
      Bytes: (metric.ABBytes ?? 0) + (metric.BABytes ?? 0),
    });
  }
  // Into the pipeline's guest log (GET /v1/pipelines/{id}/logs). Every line counts against
  // the log's budget: drop this once the guest works.
  console.log(`kept ${out.length} of ${flows.length} flows`);
  return out;
}
