// Masks IP addresses to a prefix length: one flat record per flow with the addresses
// anonymized. Config: {"ipv4_prefix": 24, "ipv6_prefix": 48} (those are the defaults).
//
// The JavaScript twin of guests/anonymize (Rust): the same records, fields, order and values,
// which tests/tests/guest_languages.rs checks. Build it with
// `sluice guest build guests/js/anonymize.js -o anonymize-js.wasm`. JavaScript has no address
// parser, so this one parses and prints as Rust's std::net does: no zone ids, no leading zeros
// in IPv4 octets, RFC 5952 output with IPv4-mapped addresses as ::ffff:a.b.c.d.

// Skydive's FlowProtocol names in ordinal order (guest-sdk/ENCODING.md §2); any other value
// is "", as the Rust SDK's `Protocol::name()` gives for an unknown one.
const PROTOCOLS = ['ETHERNET', 'IPV4', 'TCP', 'UDP', 'SCTP', 'IPV6', 'ICMPV4', 'ICMPV6'];

// `config[key]` when it is an unsigned integer, else undefined: the Rust guest reads its
// prefixes with serde_json's `as_u64`, so -1 and "16" mean "not set" there too. (JSON.parse
// makes 16.0 and 16 the same number, so 16.0 counts here where Rust ignores it.)
function u64(config, key) {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) return undefined;
  const v = config[key];
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : undefined;
}

export function init(config) {
  const v4 = u64(config, 'ipv4_prefix') ?? 24;
  const v6 = u64(config, 'ipv6_prefix') ?? 48;
  if (v4 > 32 || v6 > 128) {
    throw new sluice.GuestError(
      `prefix out of range: ipv4_prefix ${v4} (0-32), ipv6_prefix ${v6} (0-128)`);
  }
  // What init returns is what transform gets as `config`: the masks, computed once (the
  // IPv6 one as eight 16-bit groups, as JavaScript's bit operators work on 32 bits).
  return {
    v4Keep: v4 === 0 ? 0 : (0xffffffff << (32 - v4)) >>> 0,
    v6Keep: Array.from({ length: 8 }, (_, i) => {
      const bits = Math.min(Math.max(v6 - 16 * i, 0), 16);
      return bits === 0 ? 0 : (0xffff << (16 - bits)) & 0xffff;
    }),
  };
}

const OCTET = /^(0|[1-9][0-9]{0,2})$/;
const HEXTET = /^[0-9a-fA-F]{1,4}$/;

function parseV4(s) {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let v = 0;
  for (const p of parts) {
    if (!OCTET.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    v = v * 256 + n;
  }
  return v;
}

// Groups of `text` ("a:b:c", maybe ending in a dotted IPv4 when `v4Ok`), at most `limit`.
function groups(text, limit, v4Ok) {
  const parts = text.split(':');
  const out = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    if (v4Ok && i === parts.length - 1 && p.includes('.')) {
      if (out.length + 2 > limit) return null;
      const v = parseV4(p);
      if (v === null) return null;
      out.push(Math.floor(v / 65536), v % 65536);
    } else {
      if (!HEXTET.test(p) || out.length + 1 > limit) return null;
      out.push(parseInt(p, 16));
    }
  }
  return out;
}

function parseV6(s) {
  const at = s.indexOf('::');
  if (at < 0) {
    const g = groups(s, 8, true);
    return g && g.length === 8 ? g : null;
  }
  if (s.indexOf('::', at + 1) >= 0) return null;
  const head = at === 0 ? [] : groups(s.slice(0, at), 7, false);
  if (!head) return null;
  const rest = s.slice(at + 2);
  const tail = rest === '' ? [] : groups(rest, 7 - head.length, true);
  if (!tail) return null;
  return [...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail];
}

function v4Text(v) {
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

function v6Text(g) {
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return '::ffff:' + v4Text(g[6] * 65536 + g[7]);
  }
  let bestAt = -1, bestLen = 0, runAt = -1, run = 0;
  for (let i = 0; i < 8; i++) {
    if (g[i] === 0) {
      if (run === 0) runAt = i;
      run++;
      if (run > bestLen) { bestAt = runAt; bestLen = run; }
    } else {
      run = 0;
    }
  }
  const hex = g.map((x) => x.toString(16));
  if (bestLen > 1) {
    return hex.slice(0, bestAt).join(':') + '::' + hex.slice(bestAt + bestLen).join(':');
  }
  return hex.join(':');
}

// `addr` with the bits past the prefix cleared; text that is not an address becomes "".
export function mask(addr, keep) {
  if (typeof addr !== 'string') return '';
  const v4 = parseV4(addr);
  if (v4 !== null) return v4Text((v4 & keep.v4Keep) >>> 0);
  const v6 = parseV6(addr);
  if (v6 !== null) return v6Text(v6.map((x, i) => x & keep.v6Keep[i]));
  return '';
}

function int(obj, key) {
  const v = obj && typeof obj === 'object' ? obj[key] : undefined;
  return typeof v === 'number' && Number.isInteger(v) ? v : 0;
}

function protocol(v) {
  if (typeof v === 'string') return PROTOCOLS.includes(v) ? v : '';
  if (Number.isInteger(v) && v >= 0 && v < PROTOCOLS.length) return PROTOCOLS[v];
  return '';
}

export function transform(flows, config) {
  const out = [];
  for (const flow of flows) {
    const network = flow.Network || {};
    const transport = flow.Transport;
    const metric = flow.Metric || {};
    out.push({
      UUID: flow.UUID || '',
      LayersPath: flow.LayersPath || '',
      SrcAddr: mask(network.A ?? '', config),
      DstAddr: mask(network.B ?? '', config),
      SrcPort: int(transport, 'A'),
      DstPort: int(transport, 'B'),
      Protocol: transport ? protocol(transport.Protocol) : '',
      Packets: int(metric, 'ABPackets') + int(metric, 'BAPackets'),
      Bytes: int(metric, 'ABBytes') + int(metric, 'BABytes'),
      Start: int(flow, 'Start'),
      Last: int(flow, 'Last'),
    });
  }
  return out;
}
