// Native tests of transform.js: `node --test`.

import { test } from 'node:test';
import assert from 'node:assert/strict';

// Inside the component the `sluice` global comes with the build; here, a stand-in.
class GuestError extends Error {}
globalThis.sluice = {
  log: (level, message) => console.error(`[${level}] ${message}`),
  GuestError,
};
// Imported after the stand-in exists (a static import would run first).
const { init, transform } = await import('./transform.js');

// A TCP flow over IPv4 as the analyzer writes it.
function tcp4(src, sport, dst, dport) {
  return {
    UUID: `${src}:${sport}-${dst}:${dport}`,
    LayersPath: 'Ethernet/IPv4/TCP',
    Network: { Protocol: 'IPV4', A: src, B: dst, ID: 0 },
    Transport: { Protocol: 'TCP', A: sport, B: dport, ID: 0 },
    Metric: { ABPackets: 6, ABBytes: 516, BAPackets: 4, BABytes: 760 },
    Start: 1546338030000,
    Last: 1546338032500,
  };
}

test('keeps the configured port', () => {
  const flows = [tcp4('10.0.0.1', 40000, '10.0.0.2', 443), tcp4('10.0.0.1', 40001, '10.0.0.2', 80)];
  const records = transform(flows, init({ port: 443 }));
  assert.deepEqual(records, [
    { UUID: '10.0.0.1:40000-10.0.0.2:443', Src: '10.0.0.1', Dst: '10.0.0.2', Port: 443, Bytes: 1276 },
  ]);
  // The keys' order is the fields' order in the JSON and CSV the pipeline writes.
  assert.deepEqual(Object.keys(records[0]), ['UUID', 'Src', 'Dst', 'Port', 'Bytes']);
});

test('refuses a port that is not a number', () => {
  assert.throws(() => init({ port: 'https' }), GuestError);
});
