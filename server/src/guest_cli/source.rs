//! Which world a guest's source is written for, read from the functions it defines: a look at
//! the text with its comments and string contents blanked out, not a parser. `--world` settles
//! what this can't see (a function made at run time, `export *`).

use std::sync::LazyLock;

use regex::Regex;

use super::World;

/// The worlds whose function a Python file defines (or imports) at its top level.
pub(super) fn python_worlds(source: &str) -> Vec<World> {
    static DEF: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?m)^(?:async[ \t]+)?def[ \t]+(transform|mangle)[ \t]*\(").unwrap()
    });
    // `transform = make_transform()`, `transform: Callable = ...` (not `==`).
    static ASSIGN: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?m)^(transform|mangle)[ \t]*(?::[^=\n]*)?=(?:[^=]|$)").unwrap()
    });
    // `from helpers import transform`, `from x import (init, mangle as _m)`, `import x as mangle`.
    static IMPORT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?m)^(?:from[ \t]+[\w.]+[ \t]+)?import[ \t]+\(?([^)\n]*)").unwrap()
    });
    let text = blank_python(source);
    let mut names: Vec<String> = Vec::new();
    for re in [&*DEF, &*ASSIGN] {
        names.extend(re.captures_iter(&text).map(|c| c[1].to_string()));
    }
    for c in IMPORT.captures_iter(&text) {
        names.extend(bound_names(&c[1]));
    }
    worlds_of(&names)
}

/// The worlds whose function a JavaScript module exports.
pub(super) fn js_worlds(source: &str) -> Vec<World> {
    static FUNCTION: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\bexport\s+(?:async\s+)?function\s*\*?\s*(transform|mangle)\b").unwrap()
    });
    static BINDING: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\bexport\s+(?:const|let|var)\s+(transform|mangle)\b").unwrap()
    });
    // `export { transform }`, `export { t as transform } from './t.js'`.
    static LIST: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\bexport\s*\{([^}]*)\}").unwrap());
    let text = blank_c_like(source, true);
    let mut names: Vec<String> = Vec::new();
    for re in [&*FUNCTION, &*BINDING] {
        names.extend(re.captures_iter(&text).map(|c| c[1].to_string()));
    }
    for c in LIST.captures_iter(&text) {
        names.extend(bound_names(&c[1]));
    }
    worlds_of(&names)
}

/// The worlds whose export macro a Rust file calls.
pub(super) fn rust_worlds(source: &str) -> Vec<World> {
    static MACRO: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\bexport_(transform|mangle)\s*!").unwrap());
    // Strings stay: a lifetime's quote (`'a`) would read as a string's start.
    let text = blank_c_like(source, false);
    let names: Vec<String> = MACRO
        .captures_iter(&text)
        .map(|c| c[1].to_string())
        .collect();
    worlds_of(&names)
}

fn worlds_of(names: &[String]) -> Vec<World> {
    [World::Transformer, World::Mangler]
        .into_iter()
        .filter(|w| names.iter().any(|n| n == w.function()))
        .collect()
}

/// The names an import or export list binds: `a`, `b as c` → `a`, `c`.
fn bound_names(list: &str) -> Vec<String> {
    list.split(',')
        .filter_map(|item| item.split_whitespace().last())
        .map(|n| n.trim_matches(|c| c == '(' || c == ')').to_string())
        .collect()
}

/// `source` with comments and the contents of string literals replaced by spaces (line breaks
/// kept), so that a docstring or comment mentioning `def transform(` doesn't count.
fn blank_python(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
            continue;
        }
        if c != '"' && c != '\'' {
            out.push(c);
            i += 1;
            continue;
        }
        let triple = chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c);
        let quote = if triple { 3 } else { 1 };
        for _ in 0..quote {
            out.push(c);
        }
        i += quote;
        while i < chars.len() {
            let d = chars[i];
            if d == '\\' {
                out.push(' ');
                if let Some(&e) = chars.get(i + 1) {
                    out.push(blank(e));
                }
                i += 2;
                continue;
            }
            if d == c && (!triple || (chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c)))
            {
                for _ in 0..quote {
                    out.push(c);
                }
                i += quote;
                break;
            }
            if d == '\n' && !triple {
                // An unterminated one-line string ends with its line.
                break;
            }
            out.push(blank(d));
            i += 1;
        }
    }
    out
}

/// `source` (JavaScript, or Rust with `strings` false) with `//` and `/* */` comments and, with
/// `strings`, the contents of '', "" and `` literals blanked; a template's `${...}` parts stay.
fn blank_c_like(source: &str, strings: bool) -> String {
    #[derive(PartialEq)]
    enum Mode {
        Code,
        Template,
    }
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut mode = Mode::Code;
    // Brace depth, and the depth at which each open `${` of a template started.
    let mut depth = 0usize;
    let mut open: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if mode == Mode::Template {
            match (c, next) {
                ('\\', Some(n)) => {
                    out.push(' ');
                    out.push(blank(n));
                    i += 2;
                }
                ('`', _) => {
                    out.push('`');
                    mode = Mode::Code;
                    i += 1;
                }
                ('$', Some('{')) => {
                    out.push_str("${");
                    open.push(depth);
                    mode = Mode::Code;
                    i += 2;
                }
                _ => {
                    out.push(blank(c));
                    i += 1;
                }
            }
            continue;
        }
        match (c, next) {
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    out.push(' ');
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                out.push_str("  ");
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    out.push(blank(chars[i]));
                    i += 1;
                }
                if i < chars.len() {
                    out.push_str("  ");
                    i += 2;
                }
            }
            ('\'' | '"', _) if strings => {
                out.push(c);
                i += 1;
                while i < chars.len() && chars[i] != c && chars[i] != '\n' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        out.push(' ');
                        i += 1;
                    }
                    out.push(blank(chars[i]));
                    i += 1;
                }
                if i < chars.len() && chars[i] == c {
                    out.push(c);
                    i += 1;
                }
            }
            ('`', _) if strings => {
                out.push('`');
                mode = Mode::Template;
                i += 1;
            }
            ('{', _) => {
                depth += 1;
                out.push(c);
                i += 1;
            }
            ('}', _) => {
                if strings && open.last() == Some(&depth) {
                    open.pop();
                    mode = Mode::Template;
                } else {
                    depth = depth.saturating_sub(1);
                }
                out.push(c);
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &[World] = &[World::Transformer];
    const M: &[World] = &[World::Mangler];
    const BOTH: &[World] = &[World::Transformer, World::Mangler];

    #[test]
    fn python_functions_at_the_top_level_count() {
        for (source, worlds) in [
            ("def transform(flows, config):\n    return []\n", T),
            (
                "import sluice\n\ndef init(c):\n    pass\n\ndef mangle (tag, records, config):\n    return records\n",
                M,
            ),
            ("async def transform(flows, config): ...\n", T),
            ("transform = make()\n", T),
            ("mangle: Callable = make()\n", M),
            ("from helpers import init, transform\n", T),
            ("from helpers import (init,\n    mangle as m)\n", &[]),
            ("from helpers import (init, transform_x as mangle)\n", M),
            ("import helpers as transform\n", T),
            (
                "def transform(f, c):\n    return []\ndef mangle(t, r, c):\n    return r\n",
                BOTH,
            ),
            // Not at the top level, not a definition, or inside a string or a comment.
            (
                "class A:\n    def transform(self, flows, config):\n        pass\n",
                &[],
            ),
            ("if transform == 1:\n    pass\ntransform == 2\n", &[]),
            ("def transformer(flows, config):\n    pass\n", &[]),
            ("from transform import helper\n", &[]),
            ("\"\"\"Usage:\ndef transform(flows, config):\n\"\"\"\n", &[]),
            ("'''\ndef mangle(t, r, c):\n'''\nx = 1\n", &[]),
            ("# def transform(flows, config):\n", &[]),
            ("x = 'a \\' b'\ndef mangle(t, r, c): pass\n", M),
            ("s = \"unterminated\ndef transform(f, c): pass\n", T),
        ] {
            assert_eq!(python_worlds(source), worlds, "{source}");
        }
    }

    #[test]
    fn javascript_exports_count() {
        for (source, worlds) in [
            (
                "export function transform(flows, config) { return []; }\n",
                T,
            ),
            ("export function   mangle(tag, records, config) {}\n", M),
            ("export const transform = (flows, config) => [];\n", T),
            ("export let mangle = function (t, r, c) { return r; };\n", M),
            (
                "function t(f, c) { return []; }\nexport { t as transform, init };\n",
                T,
            ),
            ("export { mangle } from './m.js';\n", M),
            ("export async function transform(f, c) {}\n", T),
            (
                "export function transform() {}\nexport function mangle() {}\n",
                BOTH,
            ),
            // Not exported, another name, or inside a comment or a string.
            ("function transform(flows, config) {}\n", &[]),
            ("export function transformer() {}\n", &[]),
            ("// export function transform() {}\n", &[]),
            ("/* export function\n transform() {} */\n", &[]),
            ("const s = 'export function transform() {}';\n", &[]),
            ("const s = `export function ${x} mangle() {}`;\n", &[]),
            (
                "const s = `a ${f({ k: `export function transform` })} b`;\nexport function mangle() {}\n",
                M,
            ),
            ("export * from './t.js';\n", &[]),
        ] {
            assert_eq!(js_worlds(source), worlds, "{source}");
        }
    }

    #[test]
    fn rust_export_macros_count() {
        assert_eq!(
            rust_worlds("struct G;\nsluice_guest::export_transform!(G);\n"),
            T
        );
        assert_eq!(
            rust_worlds("fn f<'a>(x: &'a str) {}\nexport_mangle! (G);\n"),
            M
        );
        assert_eq!(
            rust_worlds("// sluice_guest::export_transform!(G);\n/* export_mangle!(G) */\n"),
            &[] as &[World]
        );
    }

    #[test]
    fn blanking_keeps_lines_and_code() {
        let source = "a = 1  # c\ns = '''x\ny'''\nb = \"q\"\n";
        let blanked = blank_python(source);
        assert_eq!(blanked.lines().count(), source.lines().count());
        assert_eq!(blanked, "a = 1     \ns = ''' \n '''\nb = \" \"\n");
        let js = "a /* x\n */ b // c\n`t ${ {d} } u`";
        assert_eq!(blank_c_like(js, true), "a     \n    b     \n`  ${ {d} }  `");
    }
}
