"""Native tests of transform.py: `python3 -m unittest`."""

import unittest

import sluice
from transform import init, transform


def tcp4(src, sport, dst, dport):
    """A TCP flow over IPv4 as the analyzer writes it."""
    return {
        "UUID": f"{src}:{sport}-{dst}:{dport}",
        "LayersPath": "Ethernet/IPv4/TCP",
        "Network": {"Protocol": "IPV4", "A": src, "B": dst, "ID": 0},
        "Transport": {"Protocol": "TCP", "A": sport, "B": dport, "ID": 0},
        "Metric": {"ABPackets": 6, "ABBytes": 516, "BAPackets": 4, "BABytes": 760},
        "Start": 1546338030000,
        "Last": 1546338032500,
    }


class TransformTest(unittest.TestCase):
    def test_keeps_the_configured_port(self):
        flows = [tcp4("10.0.0.1", 40000, "10.0.0.2", 443), tcp4("10.0.0.1", 40001, "10.0.0.2", 80)]
        records = transform(flows, init({"port": 443}))
        self.assertEqual(
            records,
            [
                {
                    "UUID": "10.0.0.1:40000-10.0.0.2:443",
                    "Src": "10.0.0.1",
                    "Dst": "10.0.0.2",
                    "Port": 443,
                    "Bytes": 1276,
                }
            ],
        )
        # The keys' order is the fields' order in the JSON and CSV the pipeline writes.
        self.assertEqual(list(records[0]), ["UUID", "Src", "Dst", "Port", "Bytes"])

    def test_refuses_a_port_that_is_not_a_number(self):
        with self.assertRaises(sluice.GuestError):
            init({"port": "https"})


if __name__ == "__main__":
    unittest.main()
