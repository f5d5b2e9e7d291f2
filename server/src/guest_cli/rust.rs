//! Rust guests: the sluice-guest SDK, built by cargo for `wasm32-wasip2`, which makes a
//! component directly. The SDK is not on crates.io: `sluice guest new` writes the copy this
//! binary carries into the new crate (`vendor/sluice-guest`, and `vendor/sluice-wire`, the
//! batch encoding it uses).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::{World, find_program, run_captured, step};

const TARGET: &str = "wasm32-wasip2";

/// A crate `sluice guest new` copies into `vendor/<dir>/`: its manifest and files.
struct Vendored {
    /// Its folder in the repository, as the manifests name it by path (`../<repo_dir>`).
    repo_dir: &'static str,
    dir: &'static str,
    manifest: &'static str,
    files: &'static [(&'static str, &'static str)],
}

/// The SDK and the crates it depends on by path.
const VENDORED: &[Vendored] = &[
    Vendored {
        repo_dir: "guest-sdk",
        dir: "sluice-guest",
        manifest: include_str!("../../../guest-sdk/Cargo.toml"),
        files: &[
            (
                "src/config.rs",
                include_str!("../../../guest-sdk/src/config.rs"),
            ),
            (
                "src/flow.rs",
                include_str!("../../../guest-sdk/src/flow.rs"),
            ),
            ("src/lib.rs", include_str!("../../../guest-sdk/src/lib.rs")),
            (
                "src/record.rs",
                include_str!("../../../guest-sdk/src/record.rs"),
            ),
            (
                "src/testing.rs",
                include_str!("../../../guest-sdk/src/testing.rs"),
            ),
            (
                "src/wire.rs",
                include_str!("../../../guest-sdk/src/wire.rs"),
            ),
            (
                "wit/guest.wit",
                include_str!("../../../guest-sdk/wit/guest.wit"),
            ),
        ],
    },
    Vendored {
        repo_dir: "wire",
        dir: "sluice-wire",
        manifest: include_str!("../../../wire/Cargo.toml"),
        files: &[
            ("src/bytes.rs", include_str!("../../../wire/src/bytes.rs")),
            ("src/flow.rs", include_str!("../../../wire/src/flow.rs")),
            ("src/lib.rs", include_str!("../../../wire/src/lib.rs")),
            ("src/record.rs", include_str!("../../../wire/src/record.rs")),
        ],
    },
];

/// The workspace's edition, which the vendored manifests inherit (a test checks it).
const EDITION: &str = "2024";

const GET_RUST: &str = "install Rust with rustup: Debian 13 and later: apt-get install rustup, then rustup default stable; elsewhere https://rustup.rs (Debian 12's rustc is too old and has no wasm32-wasip2 target)";

/// Files of a new Rust project (`sluice guest new --lang rust`), for the crate `name`.
pub(super) fn scaffold(name: &str) -> Vec<(String, String)> {
    let mut files = vec![
        (
            "Cargo.toml".to_string(),
            include_str!("templates/rust/Cargo.toml").replace("{{name}}", name),
        ),
        (
            "src/lib.rs".to_string(),
            include_str!("templates/rust/lib.rs").to_string(),
        ),
        (
            ".gitignore".to_string(),
            include_str!("templates/rust/gitignore").to_string(),
        ),
    ];
    for krate in VENDORED {
        files.push((
            format!("vendor/{}/Cargo.toml", krate.dir),
            standalone_manifest(krate.manifest),
        ));
        files.extend(
            krate
                .files
                .iter()
                .map(|(path, text)| (format!("vendor/{}/{path}", krate.dir), text.to_string())),
        );
    }
    files
}

/// A vendored crate's manifest standing alone: what it inherits from sluice's workspace
/// spelled out, and its path dependencies pointing at the other vendored crates.
fn standalone_manifest(manifest: &str) -> String {
    let mut out = format!(
        "# Copied from sluice {} by `sluice guest new` (the guest SDK is not on crates.io).\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut section = String::new();
    for line in manifest.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.trim_matches(|c| c == '[' || c == ']').to_string();
        }
        let line = match trimmed.strip_suffix(".workspace = true") {
            Some("version") => format!("version = \"{}\"", env!("CARGO_PKG_VERSION")),
            Some("edition") => format!("edition = \"{EDITION}\""),
            Some("rust-version") => {
                format!("rust-version = \"{}\"", env!("CARGO_PKG_RUST_VERSION"))
            }
            Some("license") => format!(
                "license = \"{}\"\npublish = false",
                env!("CARGO_PKG_LICENSE")
            ),
            // The workspace's own lint.
            _ if section == "lints" && trimmed == "workspace = true" => {
                "rust.unsafe_code = \"deny\"".to_string()
            }
            // Comments may mention the workspace; the copy has none.
            _ if trimmed.starts_with('#') => continue,
            _ => {
                let mut line = line.to_string();
                for k in VENDORED {
                    line = line.replace(
                        &format!("path = \"../{}\"", k.repo_dir),
                        &format!("path = \"../{}\"", k.dir),
                    );
                }
                line
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Builds the crate of `manifest`; returns the component and its world.
pub(super) fn build(manifest: &Path) -> anyhow::Result<(Vec<u8>, World)> {
    let dir = match manifest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let world = world_of(&dir)?;
    let Some(cargo) = find_program("cargo") else {
        bail!("cargo is missing: {GET_RUST}");
    };
    ensure_target(&dir)?;
    step(format!(
        "building {} (world {world}) with cargo build --release --target {TARGET}",
        dir.display()
    ));
    let manifest = std::fs::canonicalize(manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", TARGET])
        .arg("--manifest-path")
        .arg(&manifest)
        // Artifacts as JSON on stdout; diagnostics and progress as cargo writes them, on the
        // user's terminal: they are the useful part of a failure.
        .arg("--message-format=json-render-diagnostics")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let result = cmd.output().context("cannot run cargo")?;
    if !result.status.success() {
        bail!(
            "building {} failed: cargo's errors are above",
            dir.display()
        );
    }
    let wasm =
        component_of(&String::from_utf8_lossy(&result.stdout), &manifest).with_context(|| {
            format!(
                "cargo built no .wasm for {}: its [lib] needs crate-type = [\"cdylib\"]",
                manifest.display()
            )
        })?;
    let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    Ok((bytes, world))
}

/// The world of the export macro the crate's `src/` calls.
fn world_of(dir: &Path) -> anyhow::Result<World> {
    let mut found = Vec::new();
    let mut pending = vec![dir.join("src")];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                found.extend(super::source::rust_worlds(&text));
            }
        }
    }
    found.sort_by_key(|w| w.as_str());
    found.dedup();
    match found[..] {
        [world] => Ok(world),
        [] => bail!(
            "{}: src/ calls neither sluice_guest::export_transform! nor sluice_guest::export_mangle!, so the component would export nothing sluice runs",
            dir.display()
        ),
        _ => bail!(
            "{}: src/ calls both export_transform! and export_mangle!: a component is one stage",
            dir.display()
        ),
    }
}

/// Adds the `wasm32-wasip2` target to the crate's toolchain when it lacks it.
fn ensure_target(dir: &Path) -> anyhow::Result<()> {
    let Some(rustc) = find_program("rustc") else {
        bail!("rustc is missing: {GET_RUST}");
    };
    // Run in the crate's folder: a rust-toolchain.toml there picks the toolchain.
    let mut sysroot = Command::new(rustc);
    sysroot.args(["--print", "sysroot"]).current_dir(dir);
    let r = run_captured(&mut sysroot, "rustc --print sysroot")?;
    let root = PathBuf::from(String::from_utf8_lossy(&r.stdout).trim());
    if r.status.success() && root.join("lib").join("rustlib").join(TARGET).is_dir() {
        return Ok(());
    }
    let Some(rustup) = find_program("rustup") else {
        bail!(
            "this Rust has no {TARGET} target, and rustup, which adds it, is missing: {GET_RUST}"
        );
    };
    step(format!(
        "installing the Rust target {TARGET} (rustup target add {TARGET}, once)"
    ));
    let mut add = Command::new(rustup);
    add.args(["target", "add", TARGET]).current_dir(dir);
    let r = run_captured(&mut add, "rustup target add")?;
    if !r.status.success() {
        bail!(
            "rustup target add {TARGET} failed:\n{}",
            super::tail(&String::from_utf8_lossy(&r.stderr), 20)
        );
    }
    Ok(())
}

/// The `.wasm` cargo reported for the package of `manifest` (cargo's JSON messages).
fn component_of(messages: &str, manifest: &Path) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| m["manifest_path"].as_str().map(Path::new) == Some(manifest))
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
        })
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_sdk_and_its_path_dependencies_is_carried() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for krate in VENDORED {
            let dir = krate.repo_dir;
            let src = repo.join(dir).join("src");
            for entry in std::fs::read_dir(&src).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                let path = format!("src/{name}");
                assert!(
                    krate.files.iter().any(|(p, _)| *p == path),
                    "{dir}/{path} is not in guest_cli::rust::VENDORED"
                );
            }
        }
    }

    #[test]
    fn the_vendored_manifests_stand_alone() {
        for krate in VENDORED {
            let manifest = standalone_manifest(krate.manifest);
            assert!(!manifest.contains("workspace"), "{manifest}");
            assert!(
                manifest.contains(&format!("version = \"{}\"", env!("CARGO_PKG_VERSION"))),
                "{manifest}"
            );
            // Every path dependency is one of the copies.
            for (at, _) in manifest.match_indices("path = \"") {
                let path = &manifest[at + 8..];
                let path = &path[..path.find('"').unwrap()];
                assert!(
                    VENDORED.iter().any(|k| path == format!("../{}", k.dir)),
                    "{}: path dependency {path} is not vendored (add it to VENDORED)",
                    krate.dir
                );
            }
        }
        let root =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
                .unwrap();
        assert!(
            root.contains(&format!("edition = \"{EDITION}\"")),
            "the workspace's edition is no longer {EDITION}"
        );
        // The project's manifest names the SDK's copy.
        let files = scaffold("my-guest");
        let project = &files.iter().find(|(p, _)| p == "Cargo.toml").unwrap().1;
        assert!(project.contains("name = \"my-guest\""), "{project}");
        assert!(
            project.contains("path = \"vendor/sluice-guest\""),
            "{project}"
        );
    }

    #[test]
    fn the_world_is_read_from_the_export_macro() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("inner")).unwrap();
        std::fs::write(src.join("lib.rs"), "mod inner;\n").unwrap();
        let e = world_of(dir.path()).unwrap_err().to_string();
        assert!(e.contains("calls neither"), "{e}");
        std::fs::write(
            src.join("inner/mod.rs"),
            "sluice_guest::export_mangle!(M);\n",
        )
        .unwrap();
        assert_eq!(world_of(dir.path()).unwrap(), World::Mangler);
        std::fs::write(
            src.join("lib.rs"),
            "mod inner;\nsluice_guest::export_transform!(T);\n",
        )
        .unwrap();
        let e = world_of(dir.path()).unwrap_err().to_string();
        assert!(e.contains("both"), "{e}");
    }

    #[test]
    fn the_component_is_the_packages_wasm_artifact() {
        let manifest = Path::new("/p/g/Cargo.toml");
        let messages = [
            r#"{"reason":"compiler-artifact","manifest_path":"/reg/serde_json/Cargo.toml","filenames":["/t/libserde_json.rlib"]}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/p/g/Cargo.toml","filenames":["/t/wasm32-wasip2/release/g.wasm","/t/wasm32-wasip2/release/libg.rlib"]}"#,
            r#"{"reason":"build-finished","success":true}"#,
            "not json",
        ]
        .join("\n");
        assert_eq!(
            component_of(&messages, manifest),
            Some(PathBuf::from("/t/wasm32-wasip2/release/g.wasm"))
        );
        assert_eq!(
            component_of(&messages, Path::new("/other/Cargo.toml")),
            None
        );
    }
}
