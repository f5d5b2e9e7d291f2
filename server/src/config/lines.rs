//! Where each key of a pipeline file is: the line of every mapping key and list entry, by its
//! dotted path (`pipeline.store.buffered.dirname`, `analyzers[1]`), read from the YAML parser's
//! events (saphyr-parser), so block and flow styles, quoting, comments and block scalars are
//! all placed right. serde_yaml reports the line of an error found while parsing; this index
//! gives one to the errors found afterwards, on the typed config.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// Dotted paths to 1-based lines.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

/// What is being read at one level of nesting.
enum Frame {
    /// A mapping at `path`; `key` is the path of the value to come (after its key was read).
    Map { path: String, key: Option<String> },
    /// A sequence at `path`, with the index of its next entry.
    Seq { path: String, next: usize },
}

impl LineIndex {
    /// Indexes `text`; a part that doesn't parse is left out (serde_yaml reports it).
    pub fn new(text: &str) -> Self {
        let mut lines = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let line = span.start.line();
            let starts_node = matches!(
                event,
                Event::Scalar(..)
                    | Event::Alias(_)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
            );
            if starts_node {
                // The path of this node, and whether it is a mapping key.
                let (path, is_key) = match stack.last_mut() {
                    None => (String::new(), false),
                    Some(Frame::Map { key: Some(key), .. }) => (key.clone(), false),
                    Some(Frame::Map { path, key: None }) => {
                        let name = match &event {
                            Event::Scalar(value, ..) => value.to_string(),
                            _ => "?".into(),
                        };
                        (join(path, &name), true)
                    }
                    Some(Frame::Seq { path, next }) => {
                        let entry = format!("{path}[{next}]");
                        *next += 1;
                        lines.entry(entry.clone()).or_insert(line);
                        (entry, false)
                    }
                };
                if is_key {
                    lines.entry(path.clone()).or_insert(line);
                    if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                        *key = Some(path.clone());
                    }
                }
                match event {
                    Event::MappingStart(..) => stack.push(Frame::Map { path, key: None }),
                    Event::SequenceStart(..) => stack.push(Frame::Seq { path, next: 0 }),
                    _ if !is_key => value_done(&mut stack),
                    _ => {}
                }
            } else if matches!(event, Event::MappingEnd | Event::SequenceEnd) {
                stack.pop();
                value_done(&mut stack);
            }
        }
        LineIndex { lines }
    }

    /// The line of `path`, else of its nearest enclosing key or entry that is in the file (a
    /// missing key is reported at its section).
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

/// A mapping's value was read: the next node is a key.
fn value_done(stack: &mut [Frame]) {
    if let Some(Frame::Map { key, .. }) = stack.last_mut() {
        *key = None;
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_entries_in_every_style_have_their_line() {
        let text = "\
# a comment
a:
  b:
    - x
    # note
    - y:
        - z
    - w
  c:
  - p
  - q
  d: [1, 2]
  e: {f: 1,
      g: [3, 4]}
  h: |
    text
    more text
  'quoted': 1
  i: 2
";
        let index = LineIndex::new(text);
        let line = |p| index.line_of(p);
        assert_eq!(line("a"), Some(2));
        assert_eq!(line("a.b"), Some(3));
        assert_eq!(line("a.b[0]"), Some(4));
        assert_eq!(line("a.b[1]"), Some(6));
        assert_eq!(line("a.b[1].y[0]"), Some(7));
        assert_eq!(line("a.b[2]"), Some(8), "nested lists don't count");
        assert_eq!(line("a.b[3]"), Some(3), "past the end: the list");
        assert_eq!(line("a.c[1]"), Some(11), "entries at the key's indent");
        assert_eq!(line("a.d[1]"), Some(12), "flow list entries");
        assert_eq!(
            line("a.e.g"),
            Some(14),
            "inside a flow map, on its second line"
        );
        assert_eq!(line("a.e.g[1]"), Some(14));
        assert_eq!(line("a.h"), Some(15), "a block scalar's key");
        assert_eq!(line("a.quoted"), Some(18));
        assert_eq!(line("a.i"), Some(19), "after a block scalar");
        assert_eq!(line("a.missing.deeper"), Some(2));
        assert_eq!(line("nowhere"), None);
    }
}
