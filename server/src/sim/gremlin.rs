//! A small Gremlin interpreter over a static topology, for the query shapes Skydive clients send
//! to `POST /api/topology` (docs/skydive-protocol.md §5).
//!
//! Supported: `G`, `G.V()`, `G.V('<id>')`, `G.E()`, then `Has(key[, predicate]...)`,
//! `HasKey(key)`, `In(...)`, `Out(...)`, `Both(...)` (with optional `Has`-style filters),
//! `ShortestPathTo(Metadata(...)[, ...])`, `Dedup()`, `Limit(n)`, `Count()`, `Values(key)`.
//! Predicates: a string or number (equality), `Regex(re)` (unanchored, as Go's `MatchString`),
//! `Ne`, `Within`, `Without`, `Gt`, `Gte`, `Lt`, `Lte`. Keys are dotted metadata paths that walk
//! nested objects and arrays; `ID`, `Host`, `Origin`, `CreatedAt`, `UpdatedAt`, `DeletedAt`,
//! `Revision` (and `Parent`, `Child` on edges) name the element's own fields.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

/// Why a query failed (answered with HTTP 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GremlinError {
    /// The query does not parse.
    #[error("gremlin parse error at offset {offset}: {message}")]
    Parse {
        /// Byte offset in the query.
        offset: usize,
        /// What was expected.
        message: String,
    },
    /// It parses but cannot run.
    #[error("gremlin error: {0}")]
    Eval(String),
}

/// For one metadata key: string value → the nodes having it.
type NodesByString = HashMap<String, Vec<usize>>;

/// The topology: nodes and edges in Skydive's JSON shape.
#[derive(Debug, Default, Clone)]
pub struct Graph {
    nodes: Vec<Value>,
    edges: Vec<Value>,
    index: HashMap<String, usize>,
    /// Per node, in edge order: (neighbour, whether the neighbour is the edge's child), so a
    /// traversal step costs the node's degree, not the whole edge list.
    adjacency: Vec<Vec<(usize, bool)>>,
    /// Per key, built on first use: string value → the nodes having it (directly or in an
    /// array), so `G.V().Has(key, "value")` does not scan every node.
    strings: Arc<Mutex<HashMap<String, NodesByString>>>,
}

impl Graph {
    /// Reads `{"Nodes":[...],"Edges":[...]}`; each node needs an `ID`, each edge `Parent` and
    /// `Child`.
    pub fn from_json(text: &str) -> Result<Graph, GremlinError> {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(rename = "Nodes", default)]
            nodes: Vec<Value>,
            #[serde(rename = "Edges", default)]
            edges: Vec<Value>,
        }
        let file: File = serde_json::from_str(text)
            .map_err(|e| GremlinError::Eval(format!("topology is not {{Nodes, Edges}}: {e}")))?;
        Graph::new(file.nodes, file.edges)
    }

    /// Builds a graph, checking that nodes have ids and edges have ends.
    pub fn new(nodes: Vec<Value>, edges: Vec<Value>) -> Result<Graph, GremlinError> {
        let mut index = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            let id = node
                .get("ID")
                .and_then(Value::as_str)
                .ok_or_else(|| GremlinError::Eval(format!("node {i} has no string ID")))?;
            index.insert(id.to_owned(), i);
        }
        let mut adjacency = vec![Vec::new(); nodes.len()];
        for (i, edge) in edges.iter().enumerate() {
            let end = |name: &str| {
                edge.get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| GremlinError::Eval(format!("edge {i} has no {name}")))
            };
            let (parent, child) = (end("Parent")?, end("Child")?);
            // An edge to a node that is not in the graph leads nowhere.
            if let (Some(&p), Some(&c)) = (index.get(parent), index.get(child)) {
                adjacency[p].push((c, true));
                adjacency[c].push((p, false));
            }
        }
        Ok(Graph {
            nodes,
            edges,
            index,
            adjacency,
            strings: Arc::default(),
        })
    }

    /// `{"Nodes":[...],"Edges":[...]}`.
    pub fn to_json(&self) -> Value {
        json!({"Nodes": self.nodes, "Edges": self.edges})
    }

    /// The nodes, in graph order, that may match `Has(key, predicate)`, found through the
    /// key's string index: for a string, strings (`Within`) or a regex. `None` for other
    /// predicates (the caller scans every node).
    fn candidates(&self, key: &str, predicate: &Predicate) -> Option<Vec<usize>> {
        let mut index = self.strings.lock().unwrap_or_else(|e| e.into_inner());
        let by_value = index.entry(key.to_owned()).or_insert_with(|| {
            let mut by_value = NodesByString::new();
            for (n, node) in self.nodes.iter().enumerate() {
                for v in lookup(node, key) {
                    let items = match v {
                        Value::Array(items) => items.iter().collect(),
                        v => vec![v],
                    };
                    for text in items.into_iter().filter_map(Value::as_str) {
                        by_value.entry(text.to_owned()).or_default().push(n);
                    }
                }
            }
            by_value
        });
        let mut nodes: Vec<usize> = match predicate {
            Predicate::Eq(Value::String(want)) => by_value.get(want).cloned().unwrap_or_default(),
            Predicate::Within(list) => {
                let wanted: Option<Vec<&str>> = list.iter().map(Value::as_str).collect();
                wanted?
                    .into_iter()
                    .filter_map(|v| by_value.get(v))
                    .flatten()
                    .copied()
                    .collect()
            }
            // One match per distinct value rather than per node (the Docker resolver's query).
            Predicate::Regex(re) => by_value
                .iter()
                .filter(|(text, _)| re.is_match(text))
                .flat_map(|(_, nodes)| nodes)
                .copied()
                .collect(),
            _ => return None,
        };
        nodes.sort_unstable();
        nodes.dedup();
        Some(nodes)
    }

    fn neighbours(&self, node: usize, direction: Direction) -> Vec<usize> {
        self.adjacency[node]
            .iter()
            .filter(|(_, is_child)| match direction {
                Direction::In => !is_child,
                Direction::Out => *is_child,
                Direction::Both => true,
            })
            .map(|(other, _)| *other)
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    In,
    Out,
    Both,
}

// ---------------------------------------------------------------------------------------------
// Parsing

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Str(String),
    Num(f64),
    Call(String, Vec<Arg>),
}

#[derive(Debug)]
struct Step {
    name: String,
    args: Vec<Arg>,
    offset: usize,
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error<T>(&self, message: impl Into<String>) -> Result<T, GremlinError> {
        Err(GremlinError::Parse {
            offset: self.pos,
            message: message.into(),
        })
    }

    fn skip_ws(&mut self) {
        while self.text[self.pos..].starts_with(char::is_whitespace) {
            self.pos += self.text[self.pos..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.text[self.pos..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), GremlinError> {
        if self.eat(c) {
            Ok(())
        } else {
            self.error(format!("expected `{c}`"))
        }
    }

    fn ident(&mut self) -> Result<String, GremlinError> {
        self.skip_ws();
        let rest = &self.text[self.pos..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 || !rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return self.error("expected a name");
        }
        self.pos += len;
        Ok(rest[..len].to_owned())
    }

    fn string(&mut self, quote: char) -> Result<String, GremlinError> {
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.text[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) => out.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    }),
                    None => break,
                },
                c if c == quote => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                c => out.push(c),
            }
        }
        self.error("unterminated string")
    }

    fn arg(&mut self) -> Result<Arg, GremlinError> {
        match self.peek() {
            Some(q @ ('\'' | '"')) => self.string(q).map(Arg::Str),
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let rest = &self.text[self.pos..];
                let len = rest
                    .char_indices()
                    .skip(1)
                    .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
                    .map_or(rest.len(), |(i, _)| i);
                match rest[..len].parse::<f64>() {
                    Ok(n) => {
                        self.pos += len;
                        Ok(Arg::Num(n))
                    }
                    Err(_) => self.error("bad number"),
                }
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let name = self.ident()?;
                let args = self.args()?;
                Ok(Arg::Call(name, args))
            }
            _ => self.error("expected a string, a number or a call"),
        }
    }

    fn args(&mut self) -> Result<Vec<Arg>, GremlinError> {
        self.expect('(')?;
        let mut args = Vec::new();
        if self.eat(')') {
            return Ok(args);
        }
        loop {
            args.push(self.arg()?);
            if self.eat(')') {
                return Ok(args);
            }
            self.expect(',')?;
        }
    }

    fn parse(mut self) -> Result<Vec<Step>, GremlinError> {
        if self.ident()? != "G" {
            self.pos = 0;
            return self.error("a query starts with `G`");
        }
        let mut steps = Vec::new();
        while self.eat('.') {
            let offset = self.pos;
            let name = self.ident()?;
            let args = self.args()?;
            steps.push(Step { name, args, offset });
        }
        if self.peek().is_some() {
            return self.error("unexpected text after the query");
        }
        Ok(steps)
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

#[derive(Debug)]
enum Predicate {
    Eq(Value),
    Ne(Value),
    Regex(regex::Regex),
    Within(Vec<Value>),
    Without(Vec<Value>),
    Cmp(fn(f64, f64) -> bool, f64),
    Exists,
}

impl Predicate {
    fn from_arg(arg: &Arg) -> Result<Predicate, GremlinError> {
        let literal = |a: &Arg| match a {
            Arg::Str(s) => Ok(Value::String(s.clone())),
            Arg::Num(n) => Ok(json!(n)),
            Arg::Call(name, _) => Err(GremlinError::Eval(format!("`{name}` is not a value"))),
        };
        let number = |args: &[Arg]| match args {
            [Arg::Num(n)] => Ok(*n),
            _ => Err(GremlinError::Eval("comparison needs one number".into())),
        };
        Ok(match arg {
            Arg::Str(_) | Arg::Num(_) => Predicate::Eq(literal(arg)?),
            Arg::Call(name, args) => match name.as_str() {
                "Regex" => match args.as_slice() {
                    [Arg::Str(re)] => Predicate::Regex(
                        regex::Regex::new(re)
                            .map_err(|e| GremlinError::Eval(format!("bad regex: {e}")))?,
                    ),
                    _ => return Err(GremlinError::Eval("Regex takes one string".into())),
                },
                "Ne" => match args.as_slice() {
                    [a] => Predicate::Ne(literal(a)?),
                    _ => return Err(GremlinError::Eval("Ne takes one value".into())),
                },
                "Within" => Predicate::Within(args.iter().map(literal).collect::<Result<_, _>>()?),
                "Without" => {
                    Predicate::Without(args.iter().map(literal).collect::<Result<_, _>>()?)
                }
                "Gt" => Predicate::Cmp(|a, b| a > b, number(args)?),
                "Gte" => Predicate::Cmp(|a, b| a >= b, number(args)?),
                "Lt" => Predicate::Cmp(|a, b| a < b, number(args)?),
                "Lte" => Predicate::Cmp(|a, b| a <= b, number(args)?),
                other => return Err(GremlinError::Eval(format!("unknown predicate `{other}`"))),
            },
        })
    }

    fn matches(&self, v: &Value) -> bool {
        let same = |a: &Value, b: &Value| match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            _ => a == b,
        };
        match self {
            Predicate::Eq(want) => same(v, want),
            Predicate::Ne(want) => !same(v, want),
            Predicate::Regex(re) => v.as_str().is_some_and(|s| re.is_match(s)),
            Predicate::Within(list) => list.iter().any(|w| same(v, w)),
            Predicate::Without(list) => !list.iter().any(|w| same(v, w)),
            Predicate::Cmp(op, n) => v.as_f64().is_some_and(|x| op(x, *n)),
            Predicate::Exists => true,
        }
    }
}

/// Key/predicate pairs of `Has`, `In`, `Out`, `Metadata`...
fn filters(args: &[Arg]) -> Result<Vec<(String, Predicate)>, GremlinError> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(key) = it.next() {
        let Arg::Str(key) = key else {
            return Err(GremlinError::Eval("a filter key must be a string".into()));
        };
        let predicate = match it.next() {
            Some(arg) => Predicate::from_arg(arg)?,
            None => Predicate::Exists,
        };
        out.push((key.clone(), predicate));
    }
    Ok(out)
}

const OWN_FIELDS: &[&str] = &[
    "ID",
    "Host",
    "Origin",
    "CreatedAt",
    "UpdatedAt",
    "DeletedAt",
    "Revision",
    "Parent",
    "Child",
];

/// The values at `key` in an element: its own field, or a dotted path in `Metadata` that goes
/// through arrays. A final array is returned whole.
fn lookup<'v>(element: &'v Value, key: &str) -> Vec<&'v Value> {
    if OWN_FIELDS.contains(&key) {
        return element.get(key).into_iter().collect();
    }
    let mut current: Vec<&Value> = element.get("Metadata").into_iter().collect();
    for part in key.split('.') {
        let mut next = Vec::new();
        for v in current {
            match v {
                Value::Object(map) => next.extend(map.get(part)),
                Value::Array(items) => {
                    next.extend(items.iter().filter_map(|i| i.as_object()?.get(part)))
                }
                _ => {}
            }
        }
        current = next;
    }
    current
}

fn element_matches(element: &Value, filters: &[(String, Predicate)]) -> bool {
    filters.iter().all(|(key, predicate)| {
        lookup(element, key).into_iter().any(|v| match v {
            Value::Null => false,
            Value::Array(items) => {
                matches!(predicate, Predicate::Exists) || items.iter().any(|i| predicate.matches(i))
            }
            v => predicate.matches(v),
        })
    })
}

enum Set {
    Graph,
    Nodes(Vec<usize>),
    Edges(Vec<usize>),
    Paths(Vec<Vec<usize>>),
    Values(Vec<Value>),
    Count(usize),
}

fn step_error<T>(step: &Step, message: &str) -> Result<T, GremlinError> {
    Err(GremlinError::Eval(format!(
        "{}() at offset {}: {message}",
        step.name, step.offset
    )))
}

/// Runs `query` and returns the JSON answer.
pub fn query(graph: &Graph, query: &str) -> Result<Value, GremlinError> {
    let steps = Parser {
        text: query,
        pos: 0,
    }
    .parse()?;
    let mut set = Set::Graph;
    // Whether `set` is every node (right after `V()`), where `Has` may use the index.
    let mut all_nodes = false;
    for step in &steps {
        let from_all_nodes = std::mem::take(&mut all_nodes);
        // Node steps see the nodes of paths, in order.
        if let Set::Paths(paths) = &set
            && step.name != "Count"
        {
            set = Set::Nodes(paths.iter().flatten().copied().collect());
        }
        set = match (step.name.as_str(), set) {
            ("V", Set::Graph) => match step.args.as_slice() {
                [] => {
                    all_nodes = true;
                    Set::Nodes((0..graph.nodes.len()).collect())
                }
                [Arg::Str(id)] => Set::Nodes(graph.index.get(id).copied().into_iter().collect()),
                _ => return step_error(step, "takes nothing or a node id"),
            },
            ("E", Set::Graph) => Set::Edges((0..graph.edges.len()).collect()),
            ("Has", Set::Nodes(nodes)) => {
                let f = filters(&step.args)?;
                let indexed = match f.first() {
                    Some((key, predicate)) if from_all_nodes => graph.candidates(key, predicate),
                    _ => None,
                };
                let nodes = indexed.unwrap_or(nodes);
                Set::Nodes(
                    nodes
                        .into_iter()
                        .filter(|&n| element_matches(&graph.nodes[n], &f))
                        .collect(),
                )
            }
            ("Has", Set::Edges(edges)) => {
                let f = filters(&step.args)?;
                Set::Edges(
                    edges
                        .into_iter()
                        .filter(|&e| element_matches(&graph.edges[e], &f))
                        .collect(),
                )
            }
            ("HasKey", Set::Nodes(nodes)) => {
                let [Arg::Str(key)] = step.args.as_slice() else {
                    return step_error(step, "takes one key");
                };
                Set::Nodes(
                    nodes
                        .into_iter()
                        .filter(|&n| !lookup(&graph.nodes[n], key).is_empty())
                        .collect(),
                )
            }
            (name @ ("In" | "Out" | "Both"), Set::Nodes(nodes)) => {
                let direction = match name {
                    "In" => Direction::In,
                    "Out" => Direction::Out,
                    _ => Direction::Both,
                };
                let f = filters(&step.args)?;
                Set::Nodes(
                    nodes
                        .into_iter()
                        .flat_map(|n| graph.neighbours(n, direction))
                        .filter(|&n| element_matches(&graph.nodes[n], &f))
                        .collect(),
                )
            }
            ("ShortestPathTo", Set::Nodes(nodes)) => {
                let Some(Arg::Call(metadata, args)) = step.args.first() else {
                    return step_error(step, "takes Metadata(...)");
                };
                if metadata != "Metadata" {
                    return step_error(step, "takes Metadata(...)");
                }
                let f = filters(args)?;
                Set::Paths(
                    nodes
                        .into_iter()
                        .filter_map(|n| shortest_path(graph, n, &f))
                        .collect(),
                )
            }
            ("Dedup", Set::Nodes(nodes)) => {
                let mut seen = HashSet::new();
                Set::Nodes(nodes.into_iter().filter(|n| seen.insert(*n)).collect())
            }
            ("Dedup", Set::Edges(edges)) => {
                let mut seen = HashSet::new();
                Set::Edges(edges.into_iter().filter(|n| seen.insert(*n)).collect())
            }
            ("Limit", set @ (Set::Nodes(_) | Set::Edges(_))) => {
                let [Arg::Num(n)] = step.args.as_slice() else {
                    return step_error(step, "takes a number");
                };
                let n = n.max(0.0) as usize;
                match set {
                    Set::Nodes(mut v) => {
                        v.truncate(n);
                        Set::Nodes(v)
                    }
                    Set::Edges(mut v) => {
                        v.truncate(n);
                        Set::Edges(v)
                    }
                    _ => unreachable!("matched above"),
                }
            }
            ("Count", set) => Set::Count(match set {
                Set::Graph => 1,
                Set::Nodes(v) | Set::Edges(v) => v.len(),
                Set::Paths(v) => v.len(),
                Set::Values(v) => v.len(),
                Set::Count(_) => 1,
            }),
            ("Values", set @ (Set::Nodes(_) | Set::Edges(_))) => {
                let [Arg::Str(key)] = step.args.as_slice() else {
                    return step_error(step, "takes one key");
                };
                let elements: Vec<&Value> = match &set {
                    Set::Nodes(v) => v.iter().map(|&n| &graph.nodes[n]).collect(),
                    Set::Edges(v) => v.iter().map(|&e| &graph.edges[e]).collect(),
                    _ => Vec::new(),
                };
                Set::Values(
                    elements
                        .into_iter()
                        .flat_map(|e| lookup(e, key))
                        .filter(|v| !v.is_null())
                        .cloned()
                        .collect(),
                )
            }
            (_, _) => return step_error(step, "is not supported here"),
        };
    }
    Ok(match set {
        Set::Graph => json!([graph.to_json()]),
        Set::Nodes(v) => Value::Array(v.into_iter().map(|n| graph.nodes[n].clone()).collect()),
        Set::Edges(v) => Value::Array(v.into_iter().map(|e| graph.edges[e].clone()).collect()),
        Set::Paths(paths) => Value::Array(
            paths
                .into_iter()
                .map(|p| Value::Array(p.into_iter().map(|n| graph.nodes[n].clone()).collect()))
                .collect(),
        ),
        // Skydive answers `null`, not `[]`, when Values finds nothing.
        Set::Values(v) if v.is_empty() => Value::Null,
        Set::Values(v) => Value::Array(v),
        Set::Count(n) => json!(n),
    })
}

/// Breadth-first search over edges in either direction.
fn shortest_path(graph: &Graph, from: usize, to: &[(String, Predicate)]) -> Option<Vec<usize>> {
    let mut previous: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen = HashSet::from([from]);
    while let Some(n) = queue.pop_front() {
        if element_matches(&graph.nodes[n], to) {
            let mut path = vec![n];
            let mut cur = n;
            while let Some(&p) = previous.get(&cur) {
                path.push(p);
                cur = p;
            }
            path.reverse();
            return Some(path);
        }
        for m in graph.neighbours(n, Direction::Both) {
            if seen.insert(m) {
                previous.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    None
}

/// Turns a `resolvers.json` topology (`nodes`: name → Metadata, `edges`: `[parent, child]`) into
/// a graph whose node ids are `<topology>:<name>`, as in that file's mock responses.
pub fn graph_from_vector(name: &str, topology: &Value) -> Result<Graph, GremlinError> {
    let mut nodes = Vec::new();
    let empty = Map::new();
    for (key, metadata) in topology["nodes"].as_object().unwrap_or(&empty) {
        nodes.push(json!({
            "ID": format!("{name}:{key}"),
            "Metadata": metadata,
            "Host": "node-1",
            "Origin": "agent.node-1",
            "CreatedAt": 0,
            "UpdatedAt": 0,
            "DeletedAt": null,
            "Revision": 1,
        }));
    }
    let mut edges = Vec::new();
    for (i, pair) in topology["edges"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        edges.push(json!({
            "ID": format!("{name}:edge{i}"),
            "Metadata": {"RelationType": "ownership"},
            "Parent": format!("{name}:{}", pair[0].as_str().unwrap_or_default()),
            "Child": format!("{name}:{}", pair[1].as_str().unwrap_or_default()),
        }));
    }
    Graph::new(nodes, edges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &str) -> Value {
        crate::test_vectors::json(path)
    }

    fn ids(v: &Value) -> Vec<String> {
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
                Value::Object(o) => out.push(o["ID"].as_str().unwrap_or_default().to_owned()),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(v, &mut out);
        out
    }

    #[test]
    fn resolver_vectors_give_the_mock_answers() {
        let vectors = read("exporter/resolvers.json");
        let mut checked = 0;
        for case in vectors["cases"].as_array().unwrap() {
            let topo = case["topology"].as_str().unwrap();
            let graph = graph_from_vector(topo, &vectors["topologies"][topo]).unwrap();
            for q in case["derived_queries"].as_array().into_iter().flatten() {
                let text = q["query"].as_str().unwrap();
                let got = query(&graph, text).unwrap_or_else(|e| panic!("{text}: {e}"));
                let want = &q["mock_response"];
                assert_eq!(ids(&got), ids(want), "{}: {text}", case["name"]);
                // Paths stay nested: the same array depth as the mock.
                assert_eq!(
                    got.as_array()
                        .and_then(|a| a.first())
                        .is_some_and(Value::is_array),
                    want.as_array()
                        .and_then(|a| a.first())
                        .is_some_and(Value::is_array),
                    "{text}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 15, "only {checked} queries checked");
    }

    fn skydive_graph() -> Graph {
        let nodes = read("skydive/rest-topology-response-nodes.json");
        let mut node = nodes[0].clone();
        node["Metadata"]["RoutingTables"] = json!([{"Src": "10.0.0.12"}, {"Src": null}]);
        let host =
            json!({"ID": "h", "Metadata": {"Type": "host", "Name": "node-1"}, "Host": "node-1"});
        let edge = json!({"ID": "e", "Metadata": {}, "Parent": "h", "Child": node["ID"].clone()});
        Graph::new(vec![node, host], vec![edge]).unwrap()
    }

    #[test]
    fn rest_vectors_and_values() {
        let graph = skydive_graph();
        let request = read("skydive/rest-topology-request-nodes.json");
        let got = query(&graph, request["GremlinQuery"].as_str().unwrap()).unwrap();
        let mut want = read("skydive/rest-topology-response-nodes.json");
        want[0]["Metadata"]["RoutingTables"] = json!([{"Src": "10.0.0.12"}, {"Src": null}]);
        assert_eq!(got, want, "the node as stored, every field");

        let request = read("skydive/rest-topology-request-values.json");
        let got = query(&graph, request["GremlinQuery"].as_str().unwrap()).unwrap();
        assert_eq!(got, read("skydive/rest-topology-response-values.json"));

        let none = query(
            &graph,
            "G.V().Has('RoutingTables.Src', '1.2.3.4').Values('Host')",
        );
        assert_eq!(none.unwrap(), Value::Null);
        assert_eq!(
            query(&graph, "G.V().Has(\"IPV4\", Regex('192\\.168\\..*'))").unwrap()[0]["ID"],
            want[0]["ID"]
        );
        assert_eq!(
            query(
                &graph,
                "G.V().Has('RoutingTables.Src','10.0.0.12').In().Has('Type','host').Values('Name')"
            )
            .unwrap(),
            json!(["node-1"])
        );
        assert_eq!(query(&graph, "G.V().Count()").unwrap(), json!(2));
        assert_eq!(
            query(&graph, "G.V().Has('MTU', Gt(1000)).Count()").unwrap(),
            json!(1)
        );
        assert_eq!(query(&graph, "G.E().Count()").unwrap(), json!(1));
        assert_eq!(
            query(&graph, "G.V('h').Out().Values('Name')").unwrap(),
            json!(["eth0"])
        );
        assert_eq!(
            query(&graph, "G").unwrap()[0]["Nodes"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn parse_errors_are_reported() {
        let graph = skydive_graph();
        for bad in [
            "V()",
            "G.V(",
            "G.V().Has('a)",
            "G.V().Has('a', 'b') extra",
            "G.V().Nope()",
            "G.V().Has('a', Regex('('))",
            "G.Values('x')",
        ] {
            assert!(query(&graph, bad).is_err(), "{bad} should fail");
        }
        assert!(matches!(
            query(&graph, "G.V(").unwrap_err(),
            GremlinError::Parse { .. }
        ));
    }
}
