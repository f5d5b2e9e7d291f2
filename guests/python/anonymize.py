"""Masks IP addresses to a prefix length: one flat record per flow with the addresses
anonymized. Config: {"ipv4_prefix": 24, "ipv6_prefix": 48} (those are the defaults).

The Python twin of guests/anonymize (Rust): the same records, fields, order and values, which
tests/tests/guest_languages.rs checks. Build it with
`sluice guest build guests/python/anonymize.py -o anonymize-py.wasm`.
"""

import ipaddress

import sluice

# Skydive's FlowProtocol names in ordinal order (guest-sdk/ENCODING.md §2); any other value
# is "", as the Rust SDK's `Protocol::name()` gives for an unknown one.
PROTOCOLS = ("ETHERNET", "IPV4", "TCP", "UDP", "SCTP", "IPV6", "ICMPV4", "ICMPV6")


def _u64(config, key):
    """`config[key]` when it is an unsigned integer, else None: the Rust guest reads its
    prefixes with serde_json's `as_u64`, so -1, "16" and 16.5 mean "not set" there too."""
    if not isinstance(config, dict):
        return None
    v = config.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
        return None
    return v


def init(config):
    v4 = _u64(config, "ipv4_prefix")
    v6 = _u64(config, "ipv6_prefix")
    v4 = 24 if v4 is None else v4
    v6 = 48 if v6 is None else v6
    if v4 > 32 or v6 > 128:
        raise sluice.GuestError(
            f"prefix out of range: ipv4_prefix {v4} (0-32), ipv6_prefix {v6} (0-128)"
        )
    # What init returns is what transform gets as `config`: the masks, computed once.
    return {
        "v4_keep": (0xFFFFFFFF << (32 - v4)) & 0xFFFFFFFF,
        "v6_keep": (((1 << 128) - 1) << (128 - v6)) & ((1 << 128) - 1),
    }


def _v6_text(bits):
    """An IPv6 address as Rust's `Ipv6Addr` writes it: RFC 5952 (the longest run of two or
    more zero groups as `::`, the first on a tie), IPv4-mapped addresses as ::ffff:a.b.c.d."""
    if bits >> 32 == 0xFFFF:
        return "::ffff:" + str(ipaddress.IPv4Address(bits & 0xFFFFFFFF))
    groups = [(bits >> (112 - 16 * i)) & 0xFFFF for i in range(8)]
    best_at, best_len, at, run = -1, 0, -1, 0
    for i, g in enumerate(groups):
        if g == 0:
            if run == 0:
                at = i
            run += 1
            if run > best_len:
                best_at, best_len = at, run
        else:
            run = 0
    hexes = [format(g, "x") for g in groups]
    if best_len > 1:
        return ":".join(hexes[:best_at]) + "::" + ":".join(hexes[best_at + best_len :])
    return ":".join(hexes)


def mask(addr, v4_keep, v6_keep):
    """`addr` with the bits past the prefix cleared; text that is not an address becomes ""."""
    # Rust's parser takes no zone id (fe80::1%eth0), where Python's ipaddress would.
    if not isinstance(addr, str) or "%" in addr:
        return ""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return ""
    if ip.version == 4:
        return str(ipaddress.IPv4Address(int(ip) & v4_keep))
    return _v6_text(int(ip) & v6_keep)


def _int(obj, key):
    v = obj.get(key) if isinstance(obj, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _protocol(value):
    if isinstance(value, str):
        return value if value in PROTOCOLS else ""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(PROTOCOLS):
        return PROTOCOLS[value]
    return ""


def transform(flows, config):
    v4_keep, v6_keep = config["v4_keep"], config["v6_keep"]
    out = []
    for flow in flows:
        network = flow.get("Network") or {}
        transport = flow.get("Transport")
        metric = flow.get("Metric") or {}
        out.append(
            {
                "UUID": flow.get("UUID") or "",
                "LayersPath": flow.get("LayersPath") or "",
                "SrcAddr": mask(network.get("A", ""), v4_keep, v6_keep),
                "DstAddr": mask(network.get("B", ""), v4_keep, v6_keep),
                "SrcPort": _int(transport, "A"),
                "DstPort": _int(transport, "B"),
                "Protocol": _protocol(transport.get("Protocol")) if transport else "",
                "Packets": _int(metric, "ABPackets") + _int(metric, "BAPackets"),
                "Bytes": _int(metric, "ABBytes") + _int(metric, "BABytes"),
                "Start": _int(flow, "Start"),
                "Last": _int(flow, "Last"),
            }
        )
    return out
