"""The scale-out benchmark behind scripts/bench-cluster (which starts PostgreSQL and builds the
binary): three `sluice serve` nodes on one database, N pipelines (default 1,000: ten tenants of
100, the default quota), each with its own host_id on one `sluice sim`.

Prints, as measured on this machine:
- the time to create the pipelines through the three nodes in turn, and until the simulator
  has accepted a subscription for every host_id;
- API latency through node 1 (median, p99 over rounds interleaved with each other): the status
  of a pipeline node 1 runs, of one another node runs (forwarded to it), and a tenant's list
  of 100 (states published by their owners);
- failover: SIGKILL of node 3, then the time until every pipeline it ran is subscribed again
  (first, median, last), from the simulator's log of subscriptions;
- 409s the simulator answered (two subscribers for one host_id): expected 0.
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ADMIN = "bench-admin-token"
SECRET_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def now_ms():
    return int(time.time() * 1000)


def request(addr, method, path, token=None, body=None, content_type="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else body.encode())
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start(cmd, prefix, env=None, log=None):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL,
                         env=env, text=True)
    for line in p.stdout:
        if line.startswith(prefix):
            return p, line[len(prefix):].strip()
    sys.exit(f"{cmd[1]} exited before listening")


def create_database(server):
    name = f"sluice_bench_{os.getpid()}"
    psql = next((f"/usr/lib/postgresql/{v}/bin/psql" for v in sorted(os.listdir("/usr/lib/postgresql"))
                 if os.path.exists(f"/usr/lib/postgresql/{v}/bin/psql")), "psql")
    subprocess.run([psql, server, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    return server.rsplit("/", 1)[0] + "/" + name


def attempts(sim):
    _, body = request(sim, "GET", "/sim/subscriptions")
    return json.loads(body)["subscriptions"]


def subscribed_since(sim, hosts, since):
    at = {}
    refused = 0
    for a in attempts(sim):
        if a["at_ms"] < since:
            continue
        if a["status"] == 409:
            refused += 1
        elif a["host_id"] in hosts:
            at[a["host_id"]] = a["at_ms"]
    return at, refused


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--postgres", required=True, help="a server URL whose user may create databases")
    ap.add_argument("--pipelines", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=200, help="requests per latency figure")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-bench-cluster.")
    database = create_database(args.postgres)
    procs = []
    try:
        sim, sim_addr = start([args.bin, "sim", "--listen", "127.0.0.1:0", "--rate", "2", "--flows", "5"],
                              "sluice sim listening on ")
        procs.append(sim)
        env = dict(os.environ, SLUICE_ADMIN_TOKEN=ADMIN, SLUICE_SECRET_KEY=SECRET_KEY,
                   RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        nodes = []
        for n in ("n1", "n2", "n3"):
            log = open(os.path.join(work, f"{n}.log"), "w")
            p, addr = start([args.bin, "serve", "--listen", "127.0.0.1:0", "--data-dir",
                             os.path.join(work, n), "--node-id", n, "--database", database],
                            "sluice serve listening on ", env=env, log=log)
            procs.append(p)
            nodes.append((n, p, addr))
        addrs = [a for _, _, a in nodes]
        tenants = []
        for t in range((args.pipelines + 99) // 100):
            _, body = request(addrs[0], "POST", "/v1/tenants", ADMIN, json.dumps({"name": f"t{t}"}))
            tenants.append(json.loads(body)["token"])
        ws = f"ws://{sim_addr}/ws/subscriber/flow"
        ids, owner_token = [], {}
        started = time.monotonic()
        for i in range(args.pipelines):
            token = tenants[i // 100]
            yaml = (f"host_id: bench-{i}\npipeline:\n  subscriber:\n    url: {ws}\n  store:\n"
                    f"    buffered:\n      dirname: b\n      max_flows_per_object: 1000\n"
                    f"      max_flow_array_size: 10000\n  write:\n    type: file\n    file:\n      dir: out\n")
            status, body = request(addrs[i % 3], "POST", "/v1/pipelines", token, yaml, "application/yaml")
            assert status == 201, body
            pid = json.loads(body)["id"]
            ids.append(pid)
            owner_token[pid] = token
        created = time.monotonic() - started
        hosts = {f"bench-{i}" for i in range(args.pipelines)}
        while len(subscribed_since(sim_addr, hosts, 0)[0]) < len(hosts):
            time.sleep(0.5)
        all_up = time.monotonic() - started
        print(f"pipelines: {args.pipelines} on 3 nodes; created in {created:.1f} s "
              f"({created / args.pipelines * 1000:.1f} ms each), all subscribed after {all_up:.1f} s")
        _, body = request(addrs[0], "GET", "/v1/admin/leases", ADMIN)
        leases = json.loads(body)["leases"]
        holder = {l["pipeline_id"]: l["node"] for l in leases}
        _, body = request(addrs[0], "GET", "/v1/admin/nodes", ADMIN)
        print("per node:", {n["id"]: n["pipelines"] for n in json.loads(body)["nodes"]})
        local = [p for p in ids if holder.get(p) == "n1"]
        remote = [p for p in ids if holder.get(p) != "n1"]
        timings = {"status, local": [], "status, forwarded": [], "list of 100": []}
        for _ in range(args.rounds):
            for name, path, token in (
                ("status, local", None, None), ("status, forwarded", None, None),
                ("list of 100", "/v1/pipelines", tenants[0]),
            ):
                if path is None:
                    pid = random.choice(local if name.endswith("local") else remote)
                    path, token = f"/v1/pipelines/{pid}/status", owner_token[pid]
                t0 = time.perf_counter()
                status, _ = request(addrs[0], "GET", path, token)
                timings[name].append((time.perf_counter() - t0) * 1000)
                assert status == 200
        for name, values in timings.items():
            print(f"API through n1, {name}: median {statistics.median(values):.2f} ms, "
                  f"p99 {pct(values, 0.99):.2f} ms ({len(values)} requests)")
        victims = {l["host_id"] for l in leases if l["node"] == "n3"}
        killed = now_ms()
        nodes[2][1].send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 120
        while True:
            at, refused = subscribed_since(sim_addr, victims, killed)
            if len(at) == len(victims) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        delays = sorted(v - killed for v in at.values())
        print(f"failover after SIGKILL of n3 ({len(victims)} pipelines): {len(at)} subscribed again; "
              f"first {delays[0] / 1000:.1f} s, median {statistics.median(delays) / 1000:.1f} s, "
              f"last {delays[-1] / 1000:.1f} s; 409s: {refused}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
