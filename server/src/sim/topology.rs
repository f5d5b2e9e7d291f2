//! A synthetic cluster for `--topology`: capture hosts, runc and Docker containers (half of
//! them in pods) and VMs, in the shapes the secadvisor resolvers query (docs/stages.md
//! §6.2.1). Tests and benchmarks use it to give an analyzer many addresses to resolve.

use serde_json::{Value, json};

/// Who is behind which address, as seen from the capture hosts.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// The capture hosts' TIDs (flows' `NodeTID`); the first one holds the containers.
    pub capture_tids: Vec<String>,
    /// Addresses of runc containers (`Runc.Hosts.IP`).
    pub runc: Vec<String>,
    /// Addresses of Docker containers' interfaces (`IPV4`).
    pub docker: Vec<String>,
    /// Routing-table source addresses of VMs (`RoutingTables.Src`).
    pub vm: Vec<String>,
}

impl Cluster {
    /// The topology as `{"Nodes":[...],"Edges":[...]}`.
    pub fn graph(&self) -> Value {
        let mut graph = Builder::default();
        let hosts: Vec<String> = self
            .capture_tids
            .iter()
            .enumerate()
            .map(|(i, tid)| {
                graph.node(
                    &format!("host-{i}"),
                    json!({"Type": "host", "Name": format!("capture-{i}"), "TID": tid}),
                )
            })
            .collect();
        let Some(root) = hosts.first() else {
            return graph.finish();
        };
        for host in &hosts[1..] {
            graph.edge(root, host);
        }
        for (i, ip) in self.runc.iter().enumerate() {
            let container_id = format!("runc{i:08x}");
            let runc = graph.node(
                &format!("runc-{i}"),
                json!({"Type": "container", "Runc": {
                    "ContainerID": container_id,
                    "Hosts": {"IP": ip, "Hostname": format!("runc-host-{i}")},
                }}),
            );
            graph.edge(root, &runc);
            if i % 2 == 0 {
                graph.pod(i, &format!("containerd://{container_id}"));
            }
        }
        for (i, ip) in self.docker.iter().enumerate() {
            let container_id = format!("docker{i:08x}");
            let netns = graph.node(&format!("netns-{i}"), json!({"Type": "netns"}));
            let veth = graph.node(
                &format!("veth-{i}"),
                json!({"Type": "veth", "IPV4": [format!("{ip}/24")]}),
            );
            let container = graph.node(
                &format!("docker-{i}"),
                json!({"Type": "container", "Name": format!("docker-{i}"),
                       "Docker": {"ContainerID": container_id}}),
            );
            graph.edge(root, &netns);
            graph.edge(&netns, &veth);
            graph.edge(&netns, &container);
            if i % 2 == 1 {
                graph.pod(self.runc.len() + i, &format!("docker://{container_id}"));
            }
        }
        for (i, ip) in self.vm.iter().enumerate() {
            let vm = graph.node(
                &format!("vm-{i}"),
                json!({"Type": "host", "Name": format!("vm-{i}")}),
            );
            let routes = graph.node(
                &format!("vm-{i}-ns"),
                json!({"Type": "netns", "RoutingTables": [{"Src": ip, "Id": 254}]}),
            );
            graph.edge(&vm, &routes);
        }
        graph.finish()
    }
}

#[derive(Default)]
struct Builder {
    nodes: Vec<Value>,
    edges: Vec<Value>,
}

impl Builder {
    fn node(&mut self, id: &str, metadata: Value) -> String {
        self.nodes.push(json!({"ID": id, "Metadata": metadata}));
        id.to_string()
    }

    fn edge(&mut self, parent: &str, child: &str) {
        self.edges.push(json!({
            "ID": format!("{parent}->{child}"),
            "Parent": parent,
            "Child": child,
            "Metadata": {"RelationType": "ownership"},
        }));
    }

    /// A pod listing `container` in its status, owned by a ReplicaSet.
    fn pod(&mut self, i: usize, container: &str) {
        self.node(
            &format!("pod-{i}"),
            json!({"Type": "pod", "K8s": {
                "Namespace": "shop",
                "Name": format!("pod-{i}"),
                "Extra": {
                    "Status": {"ContainerStatuses": [{"ContainerID": container}]},
                    "ObjectMeta": {"OwnerReferences": [{"Kind": "ReplicaSet", "Name": format!("rs-{}", i % 7)}]},
                },
            }}),
        );
    }

    fn finish(self) -> Value {
        json!({"Nodes": self.nodes, "Edges": self.edges})
    }
}
