//! JavaScript guests: componentize-js packs StarlingMonkey (SpiderMonkey), the shim
//! (guest-sdk/js/) and the guest's modules into a component, with the engine initialised at
//! build time.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::{
    Stage, Toolchain, World, copy_neighbours, find_program, pick_world, run_captured, step, tail,
};

const SHIM_APP: &str = include_str!("../../../guest-sdk/js/sluice_app.js");
const SHIM_GLOBAL: &str = include_str!("../../../guest-sdk/js/sluice_global.js");
/// The toolchain's npm project: componentize-js and jco pinned, every package locked.
const PACKAGE_JSON: &str = include_str!("../../../guest-sdk/js/toolchain/package.json");
const PACKAGE_LOCK: &str = include_str!("../../../guest-sdk/js/toolchain/package-lock.json");

/// The versions the lockfile pins (for messages; the lockfile decides).
const VERSIONS: &str = "componentize-js 0.23.0, jco 1.35.0";

/// componentize-js's command line, in the toolchain's folder.
const CLI: &str = "node_modules/@bytecodealliance/componentize-js/src/cli.js";

/// File names the build takes for itself in the staging folder.
const TAKEN: &[&str] = &[
    "sluice_app.js",
    "sluice_global.js",
    "sluice_user.js",
    "sluice_world.js",
];

/// Oldest Node.js the locked packages run on (commander 14, which componentize-js's command
/// line uses, needs 20).
const NODE_MAJOR: u32 = 20;

/// Files of a new JavaScript project (`sluice guest new --lang js`).
pub(super) fn scaffold() -> Vec<(String, String)> {
    [
        (
            "transform.js",
            include_str!("templates/js/transform.js").to_string(),
        ),
        (
            "transform.test.mjs",
            include_str!("templates/js/transform.test.mjs").to_string(),
        ),
        // `"type": "module"`: Node loads transform.js as the ES module it is.
        (
            "package.json",
            include_str!("templates/js/package.json").to_string(),
        ),
    ]
    .into_iter()
    .map(|(path, text)| (path.to_string(), text))
    .collect()
}

/// Builds `file`; returns the component and its world.
pub(super) fn build(
    file: &Path,
    world: Option<World>,
    toolchains: &Path,
) -> anyhow::Result<(Vec<u8>, World)> {
    let name = file_name(file)?;
    let source =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let world = pick_world(file, &super::source::js_worlds(&source), world)?;
    let node = node()?;
    let tool = install(toolchains)?;

    let stage = Stage::new()?;
    let wit = stage.wit()?;
    let app = stage.path().join("app");
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Modules the guest imports by relative path resolve inside the staging folder only.
    copy_neighbours(
        dir,
        &app,
        &|n| (n.ends_with(".js") || n.ends_with(".mjs")) && !TAKEN.contains(&n),
        false,
    )?;
    stage.write("app/sluice_app.js", SHIM_APP)?;
    stage.write("app/sluice_global.js", SHIM_GLOBAL)?;
    // JSON strings are JavaScript string literals: any file name is quoted right.
    let quoted = serde_json::to_string(&name)?;
    let import = serde_json::to_string(&format!("./{name}"))?;
    stage.write(
        "app/sluice_world.js",
        &format!(
            "export const KIND = \"{}\";\nexport const USER_FILE = {quoted};\n",
            world.function()
        ),
    )?;
    stage.write("app/sluice_user.js", &format!("export * from {import};\n"))?;
    let out = stage.path().join("out.wasm");
    let tmp = stage.path().join("tmp");
    std::fs::create_dir_all(&tmp)?;

    step(format!(
        "building {} (world {world}) with {VERSIONS}",
        file.display()
    ));
    let cli = tool.join(CLI);
    let mut cmd = Command::new(node);
    cmd.arg(cli)
        .arg("sluice_app.js")
        .arg("--wit")
        .arg(&wit)
        .args(["--world-name", world.as_str()])
        // Their default features import wasi:http, which the host doesn't give; stdio,
        // random and clocks stay (console.log, Math.random, Date).
        .args(["--disable", "http", "fetch-event"])
        .arg("-o")
        .arg(&out)
        // componentize-js maps the working folder to the component's `/` while it
        // initialises the engine: it must be the one holding the sources.
        .current_dir(&app)
        // Its own work folder goes inside the stage, removed with it.
        .env("TMPDIR", &tmp);
    let result = run_captured(&mut cmd, "componentize-js")?;
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        bail!(
            "building {} failed:\n{}",
            file.display(),
            trim_error(&stderr)
        );
    }
    let bytes = std::fs::read(&out).context("componentize-js wrote no component")?;
    Ok((bytes, world))
}

/// The guest's file name, which must not be one the build writes.
fn file_name(file: &Path) -> anyhow::Result<String> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: not a UTF-8 file name", file.display()))?;
    if TAKEN.contains(&name) {
        bail!(
            "{}: the build writes a file of that name itself: rename it",
            file.display()
        );
    }
    Ok(name.to_string())
}

/// `node`, new enough, and `npm` beside it (for the install).
fn node() -> anyhow::Result<PathBuf> {
    const GET: &str = "Debian 13 and later: apt-get install nodejs npm; Debian 12's nodejs is 18, too old: take Node.js 20 or newer from nodejs.org";
    let Some(node) = find_program("node") else {
        bail!(
            "node is missing: JavaScript guests are built with componentize-js, which runs on Node.js {NODE_MAJOR} or newer ({GET})"
        );
    };
    let mut version = Command::new(&node);
    version.arg("--version");
    let r = run_captured(&mut version, "node --version")?;
    let text = String::from_utf8_lossy(&r.stdout);
    match node_major(&text) {
        Some(major) if major >= NODE_MAJOR => Ok(node),
        _ => bail!(
            "{} is Node.js {}: componentize-js {} needs Node.js {NODE_MAJOR} or newer ({GET})",
            node.display(),
            text.trim(),
            "0.23.0"
        ),
    }
}

/// `20` of `v20.20.2`.
fn node_major(version: &str) -> Option<u32> {
    version
        .trim()
        .strip_prefix('v')?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The npm prefix with componentize-js, installed from the lockfile on first use.
fn install(toolchains: &Path) -> anyhow::Result<PathBuf> {
    // The lockfile is the version: a sluice with another one installs again.
    let stamp = format!(
        "{VERSIONS}\n{}\n",
        crate::wasm::digest(PACKAGE_LOCK.as_bytes())
    );
    let toolchain = Toolchain::new(toolchains, "js", &stamp, CLI);
    let dir = toolchain.ensure(|dir| {
        let Some(npm) = find_program("npm") else {
            bail!("npm is missing: it installs componentize-js (Debian: apt-get install npm)");
        };
        step(format!(
            "installing {VERSIONS} into {} (once)",
            dir.display()
        ));
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("package.json"), PACKAGE_JSON)?;
        std::fs::write(dir.join("package-lock.json"), PACKAGE_LOCK)?;
        // `ci`: exactly the lockfile's packages, or an error.
        let mut cmd = Command::new(npm);
        cmd.args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(dir);
        let r = run_captured(&mut cmd, "npm ci")?;
        if !r.status.success() {
            bail!(
                "npm ci --prefix {} failed:\n{}",
                dir.display(),
                tail(&String::from_utf8_lossy(&r.stderr), 20)
            );
        }
        Ok(())
    })?;
    Ok(dir.to_path_buf())
}

/// The part of componentize-js's error output worth showing: what the engine said while it
/// ran the modules' top level (a syntax error, an exception, the shim's check), without Node's
/// stack of componentize-js itself.
fn trim_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("Error: Failed to initialize component"))
        .map(|i| i + 1)
        .or_else(|| lines.iter().position(|l| l.starts_with("Error")));
    let Some(start) = start else {
        return tail(stderr, 40);
    };
    let mut out = Vec::new();
    for line in &lines[start..] {
        if line.starts_with("    at ")
            || line.starts_with("Additionally, some promises were rejected")
            || line.starts_with("Node.js v")
        {
            break;
        }
        out.push(strip_shim_location(line));
    }
    let text = out.join("\n");
    if text.trim().is_empty() {
        tail(stderr, 40)
    } else {
        tail(text.trim(), 40)
    }
}

/// `sluice_app.js:29:9 Error: ...` → `Error: ...`: where in the shim a check threw is noise.
fn strip_shim_location(line: &str) -> String {
    if let Some(rest) = line.strip_prefix("sluice_app.js:")
        && let Some((_, message)) = rest.split_once(' ')
    {
        return message.to_string();
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_file_may_not_take_a_shim_name() {
        assert_eq!(file_name(Path::new("d/it's.mjs")).unwrap(), "it's.mjs");
        let e = file_name(Path::new("sluice_app.js"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rename it"), "{e}");
    }

    #[test]
    fn node_versions_are_read() {
        assert_eq!(node_major("v20.20.2\n"), Some(20));
        assert_eq!(node_major("v18.19.0"), Some(18));
        assert_eq!(node_major("20"), None);
    }

    // componentize-js 0.23.0's output for a guest with a syntax error (paths shortened).
    const SYNTAX: &str = "file:///t/js/node_modules/@bytecodealliance/componentize-js/src/componentize.js:365
    throw new Error(err);
          ^

Error: Failed to initialize component (wizer (/t/js/node_modules/@bytecodealliance/wizer-linux-x64/wizer)):
Exception while evaluating top-level script
broken.js:2:45 SyntaxError: missing ) after argument list:
broken.js:2:45   return flows.map((f) => ({ UUID: f.UUID });
broken.js:2:45 ............................................^
    at componentize (file:///t/js/node_modules/@bytecodealliance/componentize-js/src/componentize.js:365:11)
    at async componentizeCmd (file:///t/js/node_modules/@bytecodealliance/componentize-js/src/cli.js:9:25)

Node.js v20.20.2
";

    // ... and for a module without `transform` (the shim's check).
    const MISSING: &str = "Error: Failed to initialize component (wizer (/t/wizer)):
Exception while evaluating top-level script
sluice_app.js:29:9 Error: a transform guest must export `function transform(flows, config)`
Additionally, some promises were rejected, but the rejection never handled:
Promise rejected but never handled: a transform guest must export `function transform(flows, config)`
Stack:
  @sluice_app.js:29:9
    at componentize (file:///t/componentize.js:365:11)
";

    #[test]
    fn errors_show_what_the_engine_said() {
        assert_eq!(
            trim_error(SYNTAX),
            "Exception while evaluating top-level script\nbroken.js:2:45 SyntaxError: missing ) after argument list:\nbroken.js:2:45   return flows.map((f) => ({ UUID: f.UUID });\nbroken.js:2:45 ............................................^"
        );
        assert_eq!(
            trim_error(MISSING),
            "Exception while evaluating top-level script\nError: a transform guest must export `function transform(flows, config)`"
        );
        assert_eq!(trim_error("npm ERR! x\n"), "npm ERR! x");
    }
}
