//! `sluice guest`: write, build and upload WebAssembly guests, as guest-sdk/README.md tells.
//!
//! - `new --lang rust|python|js NAME` scaffolds a transform guest with a native test;
//! - `build PATH [-o OUT.wasm] [--world transformer|mangler]` makes a component of a `.py`
//!   file, a `.js` file or a Rust crate folder, installing the language's toolchain under
//!   `~/.cache/sluice/toolchains` (`$SLUICE_TOOLCHAINS`) on first use;
//! - `deploy OUT.wasm --server URL --token T` uploads it (`POST /v1/modules`).
//!
//! Everything a build needs from this repository (the WIT, the Python and JavaScript shims,
//! the JavaScript toolchain's lockfile, the Rust SDK for `new`) is compiled into the binary,
//! so the commands work on a machine without the sluice sources.

mod deploy;
mod js;
mod python;
mod rust;
mod source;

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

/// The contract, written into every build's staging folder.
const WIT: &str = include_str!("../../../guest-sdk/wit/guest.wit");

/// `sluice guest ...`.
#[derive(Debug, Args)]
pub struct GuestArgs {
    #[command(subcommand)]
    command: GuestCommand,
}

#[derive(Debug, Subcommand)]
enum GuestCommand {
    /// Scaffold a transform guest with a native test in a new folder NAME.
    New(NewArgs),
    /// Build a guest into a WebAssembly component: a .py file, a .js file or a Rust crate folder.
    Build(BuildArgs),
    /// Upload a component to a sluice server (POST /v1/modules); prints its module id.
    Deploy(DeployArgs),
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The guest's language.
    #[arg(long, value_enum)]
    lang: Lang,
    /// The folder to create (its name is the Rust crate's).
    name: PathBuf,
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// A Python file (.py), a JavaScript module (.js, .mjs) or a Rust crate folder (Cargo.toml).
    path: PathBuf,
    /// The component to write [default: the file's or crate's name with .wasm, here].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// The world [default: from the function the file defines: transform or mangle].
    #[arg(long, value_enum)]
    world: Option<World>,
}

#[derive(Debug, Args)]
struct DeployArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// The server's URL, e.g. http://127.0.0.1:8080 [default: $SLUICE_SERVER].
    #[arg(long)]
    server: Option<String>,
    /// A tenant token [default: $SLUICE_TOKEN, which keeps it out of the process list].
    #[arg(long)]
    token: Option<String>,
}

/// A guest's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, with the sluice-guest SDK.
    Rust,
    /// Python, with componentize-py.
    Python,
    /// JavaScript, with componentize-js.
    #[value(alias = "javascript")]
    Js,
}

/// The world a guest is built for (guest-sdk/wit/guest.wit): the host's own type, offered
/// to `--world` by its WIT name.
pub use crate::wasm::World;

impl ValueEnum for World {
    fn value_variants<'a>() -> &'a [Self] {
        &[World::Transformer, World::Mangler]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(
            clap::builder::PossibleValue::new(self.as_str()).help(match self {
                World::Transformer => "The transform stage: `transform(flows, config)`",
                World::Mangler => "The mangle stage: `mangle(tag, records, config)`",
            }),
        )
    }
}

/// Runs `sluice guest ...`.
pub async fn run(args: GuestArgs) -> anyhow::Result<()> {
    match args.command {
        GuestCommand::New(a) => tokio::task::spawn_blocking(move || new(a.lang, &a.name)).await?,
        GuestCommand::Build(a) => {
            tokio::task::spawn_blocking(move || build(&a.path, a.output.as_deref(), a.world))
                .await?
        }
        GuestCommand::Deploy(a) => {
            let server = a
                .server
                .or_else(|| std::env::var("SLUICE_SERVER").ok())
                .context("no server: pass --server URL (or set SLUICE_SERVER)")?;
            let token = a
                .token
                .or_else(|| std::env::var("SLUICE_TOKEN").ok())
                .context("no token: pass --token T (or set SLUICE_TOKEN)")?;
            deploy::deploy(&a.file, &server, &token).await
        }
    }
}

/// `sluice guest new`.
fn new(lang: Lang, dir: &Path) -> anyhow::Result<()> {
    let name = project_name(lang, dir)?;
    if fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} exists and is not empty", dir.display());
    }
    let files = match lang {
        Lang::Rust => rust::scaffold(&name),
        Lang::Python => python::scaffold(),
        Lang::Js => js::scaffold(),
    };
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let d = dir.display();
    let (test, file) = match lang {
        Lang::Rust => ("cargo test", "."),
        Lang::Python => ("python3 -m unittest", "transform.py"),
        Lang::Js => ("node --test", "transform.js"),
    };
    println!("created {d}: a transform guest and its native test");
    println!("  cd {d} && {test}");
    println!("  sluice guest build {file} -o {name}.wasm");
    Ok(())
}

/// The project's name: the folder's last component, which must make a crate name for Rust
/// and a file name everywhere.
fn project_name(lang: Lang, dir: &Path) -> anyhow::Result<String> {
    let name = dir
        .file_name()
        .and_then(OsStr::to_str)
        .with_context(|| format!("{}: the folder needs a name", dir.display()))?;
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if lang == Lang::Rust && !valid {
        bail!(
            "{name}: a Rust guest's folder name is its crate name: a letter, then letters, digits, - or _"
        );
    }
    Ok(name.to_string())
}

/// `sluice guest build`.
fn build(path: &Path, output: Option<&Path>, world: Option<World>) -> anyhow::Result<()> {
    let kind = BuildKind::of(path)?;
    let out = match output {
        Some(o) => o.to_path_buf(),
        None => PathBuf::from(format!("{}.wasm", kind.default_name(path))),
    };
    let toolchains = toolchains_dir()?;
    let (bytes, world) = match kind {
        BuildKind::Python => python::build(path, world, &toolchains)?,
        BuildKind::Js => js::build(path, world, &toolchains)?,
        BuildKind::Rust(manifest) => {
            if world.is_some() {
                bail!(
                    "--world is for .py and .js files: a Rust guest's world is the macro it calls (export_transform! or export_mangle!)"
                );
            }
            rust::build(&manifest)?
        }
    };
    write_output(&out, &bytes)?;
    step(format!(
        "wrote {} ({} bytes, {:.1} MiB, world {world})",
        out.display(),
        bytes.len(),
        bytes.len() as f64 / (1 << 20) as f64
    ));
    Ok(())
}

/// What `build` was given.
#[derive(Debug, PartialEq, Eq)]
enum BuildKind {
    Python,
    Js,
    /// The crate's manifest.
    Rust(PathBuf),
}

impl BuildKind {
    fn of(path: &Path) -> anyhow::Result<BuildKind> {
        if path.is_dir() {
            let manifest = path.join("Cargo.toml");
            if !manifest.is_file() {
                bail!(
                    "{} is a folder without Cargo.toml: give a Rust crate folder, a .py file or a .js file",
                    path.display()
                );
            }
            return Ok(BuildKind::Rust(manifest));
        }
        let kind = match path.extension().and_then(OsStr::to_str) {
            Some("py") => BuildKind::Python,
            Some("js" | "mjs") => BuildKind::Js,
            _ if path.file_name() == Some(OsStr::new("Cargo.toml")) => {
                BuildKind::Rust(path.to_path_buf())
            }
            _ => bail!(
                "{}: give a .py file, a .js file or a Rust crate folder",
                path.display()
            ),
        };
        if !path.is_file() {
            bail!("{}: no such file", path.display());
        }
        Ok(kind)
    }

    /// The output's name when `-o` is not given: the file's stem, or the crate folder's name.
    fn default_name(&self, path: &Path) -> String {
        let base = match self {
            BuildKind::Rust(manifest) => manifest
                .parent()
                .and_then(|p| fs::canonicalize(p).ok())
                .and_then(|p| p.file_name().map(|n| n.to_os_string())),
            _ => path.file_stem().map(|s| s.to_os_string()),
        };
        base.map_or_else(|| "guest".to_string(), |s| s.to_string_lossy().into_owned())
    }
}

/// The world to build for: `given`, else the one function of `found`.
fn pick_world(file: &Path, found: &[World], given: Option<World>) -> anyhow::Result<World> {
    if let Some(world) = given {
        return Ok(world);
    }
    match found {
        [world] => Ok(*world),
        [] => bail!(
            "{} defines neither `transform(flows, config)` nor `mangle(tag, records, config)` (or does it in a way this check can't see: then pass --world transformer or --world mangler)",
            file.display()
        ),
        _ => bail!(
            "{} defines both `transform` and `mangle`: pass --world transformer or --world mangler",
            file.display()
        ),
    }
}

/// Where toolchains go: `$SLUICE_TOOLCHAINS`, else `~/.cache/sluice/toolchains`.
fn toolchains_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_TOOLCHAINS").filter(|d| !d.is_empty()) {
        return Ok(dir.into());
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set: set SLUICE_TOOLCHAINS to the folder for the guest toolchains")?;
    Ok(Path::new(&home)
        .join(".cache")
        .join("sluice")
        .join("toolchains"))
}

/// A progress line (stderr, so that stdout stays the commands' answer).
fn step(line: impl fmt::Display) {
    eprintln!("{line}");
}

/// An installed toolchain: `dir`, complete when its stamp file holds `stamp` and the program
/// `probe` (a path inside it) is there. Installing takes an exclusive lock beside it, so that
/// two builds started together install once.
struct Toolchain<'a> {
    dir: PathBuf,
    stamp: &'a str,
    probe: PathBuf,
    lock: PathBuf,
}

/// Written last by an install: a folder without it (an install cut short, or one of another
/// version) is installed again.
const STAMP_FILE: &str = ".sluice-toolchain";

impl<'a> Toolchain<'a> {
    fn new(root: &Path, name: &str, stamp: &'a str, probe: &str) -> Self {
        let dir = root.join(name);
        Toolchain {
            probe: dir.join(probe),
            dir,
            stamp,
            lock: root.join(format!("{name}.lock")),
        }
    }

    /// A folder removed in part (by hand, say) counts as missing: installed again.
    fn is_installed(&self) -> bool {
        fs::read_to_string(self.dir.join(STAMP_FILE)).is_ok_and(|s| s == self.stamp)
            && self.probe.exists()
    }

    /// Runs `install` unless the toolchain is there; returns its folder.
    fn ensure(&self, install: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<&Path> {
        if self.is_installed() {
            return Ok(&self.dir);
        }
        if let Some(parent) = self.lock.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let lock = File::create(&self.lock)
            .with_context(|| format!("cannot create {}", self.lock.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                step(format!(
                    "waiting for another sluice installing into {}",
                    self.dir.display()
                ));
                lock.lock()?;
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", self.lock.display()));
            }
        }
        // The other process may have installed it meanwhile.
        if !self.is_installed() {
            let _ = fs::remove_file(self.dir.join(STAMP_FILE));
            install(&self.dir)?;
            fs::write(self.dir.join(STAMP_FILE), self.stamp)?;
        }
        Ok(&self.dir)
    }
}

/// A temporary folder for one build, removed when dropped. The toolchains get copies of the
/// sources in it, never the guest's own folder (componentize-py writes `__pycache__` into every
/// folder on its path).
struct Stage {
    path: PathBuf,
}

impl Stage {
    fn new() -> io::Result<Stage> {
        let base = std::env::temp_dir();
        loop {
            let path = base.join(format!(
                "sluice-guest-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Stage { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `text` at `rel`, creating folders.
    fn write(&self, rel: impl AsRef<Path>, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.path.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// `wit/guest.wit`; returns the folder.
    fn wit(&self) -> anyhow::Result<PathBuf> {
        self.write("wit/guest.wit", WIT)?;
        Ok(self.path.join("wit"))
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Copies the guest's neighbours (files whose name passes `file`, and with `packages` the
/// folders holding an `__init__.py`, recursively) from `from` into `to`, so that a guest
/// split over several modules builds. Hidden entries and `__pycache__` are left out.
fn copy_neighbours(
    from: &Path,
    to: &Path,
    file: &dyn Fn(&str) -> bool,
    packages: bool,
) -> anyhow::Result<()> {
    fs::create_dir_all(to)?;
    let entries = fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || name == "__pycache__" {
            continue;
        }
        let path = entry.path();
        if path.is_file() && file(name) {
            fs::copy(&path, to.join(name))
                .with_context(|| format!("cannot copy {}", path.display()))?;
        } else if packages && path.is_dir() && path.join("__init__.py").is_file() {
            copy_neighbours(&path, &to.join(name), &|_| true, true)?;
        }
    }
    Ok(())
}

/// Writes the component at `out` (a temporary name in the same folder, then a rename, so that
/// a failed write leaves no half file).
fn write_output(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = out
        .file_name()
        .with_context(|| format!("{}: not a file name", out.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| fs::rename(&tmp, out));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", out.display()))
}

/// Runs `cmd` to completion with its output captured; `what` names it in errors.
fn run_captured(cmd: &mut Command, what: &str) -> anyhow::Result<Output> {
    cmd.stdin(std::process::Stdio::null());
    cmd.output()
        .with_context(|| format!("cannot run {what} ({:?})", cmd.get_program()))
}

/// `program` when it is on the PATH.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The last `lines` lines of a tool's output, for an error that has no better part to show.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    let from = all.len().saturating_sub(lines);
    let mut out = String::new();
    if from > 0 {
        out.push_str("...\n");
    }
    out.push_str(&all[from..].join("\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_says_what_to_build() {
        let dir = tempfile::tempdir().unwrap();
        let py = dir.path().join("t.py");
        let js = dir.path().join("t.js");
        let mjs = dir.path().join("t.mjs");
        for f in [&py, &js, &mjs] {
            fs::write(f, "").unwrap();
        }
        assert_eq!(BuildKind::of(&py).unwrap(), BuildKind::Python);
        assert_eq!(BuildKind::of(&js).unwrap(), BuildKind::Js);
        assert_eq!(BuildKind::of(&mjs).unwrap(), BuildKind::Js);
        let e = BuildKind::of(dir.path()).unwrap_err().to_string();
        assert!(e.contains("without Cargo.toml"), "{e}");
        fs::write(dir.path().join("Cargo.toml"), "").unwrap();
        let manifest = dir.path().join("Cargo.toml");
        assert_eq!(
            BuildKind::of(dir.path()).unwrap(),
            BuildKind::Rust(manifest.clone())
        );
        assert_eq!(
            BuildKind::of(&manifest).unwrap(),
            BuildKind::Rust(manifest.clone())
        );
        let e = BuildKind::of(&dir.path().join("missing.py"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file"), "{e}");
        let e = BuildKind::of(&dir.path().join("t.go"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("give a .py file"), "{e}");
        assert_eq!(BuildKind::Python.default_name(&py), "t");
        let crate_name = dir.path().file_name().unwrap().to_str().unwrap();
        assert_eq!(
            BuildKind::Rust(manifest).default_name(dir.path()),
            crate_name
        );
    }

    #[test]
    fn the_world_is_the_one_function_found_unless_given() {
        let f = Path::new("g.py");
        assert_eq!(
            pick_world(f, &[World::Mangler], None).unwrap(),
            World::Mangler
        );
        assert_eq!(
            pick_world(f, &[], Some(World::Transformer)).unwrap(),
            World::Transformer
        );
        assert_eq!(
            pick_world(
                f,
                &[World::Transformer, World::Mangler],
                Some(World::Mangler)
            )
            .unwrap(),
            World::Mangler
        );
        let e = pick_world(f, &[], None).unwrap_err().to_string();
        assert!(
            e.contains("defines neither") && e.contains("--world"),
            "{e}"
        );
        let e = pick_world(f, &[World::Transformer, World::Mangler], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("defines both") && e.contains("--world"), "{e}");
    }

    #[test]
    fn a_rust_project_needs_a_crate_name() {
        assert_eq!(
            project_name(Lang::Rust, Path::new("x/my-guest_2")).unwrap(),
            "my-guest_2"
        );
        for bad in ["2guest", "my guest", "é"] {
            let e = project_name(Lang::Rust, Path::new(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains("crate name"), "{bad}: {e}");
        }
        assert_eq!(
            project_name(Lang::Python, Path::new("my guest")).unwrap(),
            "my guest"
        );
        assert!(project_name(Lang::Js, Path::new("/")).is_err());
    }

    #[test]
    fn new_refuses_a_folder_with_files_and_writes_each_language() {
        let dir = tempfile::tempdir().unwrap();
        for (lang, files) in [
            (
                Lang::Python,
                &["transform.py", "test_transform.py", "sluice.py"][..],
            ),
            (
                Lang::Js,
                &["transform.js", "transform.test.mjs", "package.json"][..],
            ),
            (
                Lang::Rust,
                &[
                    "Cargo.toml",
                    "src/lib.rs",
                    "vendor/sluice-guest/Cargo.toml",
                    "vendor/sluice-guest/src/lib.rs",
                    "vendor/sluice-guest/wit/guest.wit",
                ][..],
            ),
        ] {
            let project = dir.path().join(format!("g-{lang:?}"));
            new(lang, &project).unwrap();
            for f in files {
                assert!(project.join(f).is_file(), "{lang:?}: {f}");
            }
            let e = new(lang, &project).unwrap_err().to_string();
            assert!(e.contains("not empty"), "{e}");
        }
        // An empty folder is fine.
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        new(Lang::Python, &empty).unwrap();
    }

    #[test]
    fn a_stage_is_removed_when_dropped() {
        let stage = Stage::new().unwrap();
        let path = stage.path().to_path_buf();
        let wit = stage.wit().unwrap();
        assert_eq!(fs::read_to_string(wit.join("guest.wit")).unwrap(), WIT);
        stage.write("app/a/b.py", "x = 1\n").unwrap();
        assert!(path.join("app/a/b.py").is_file());
        let other = Stage::new().unwrap();
        assert_ne!(other.path(), path);
        drop(stage);
        assert!(!path.exists());
    }

    #[test]
    fn neighbours_are_copied_without_caches_or_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for f in [
            "g.py",
            "helper.py",
            "notes.txt",
            ".hidden.py",
            "pkg/__init__.py",
            "pkg/sub/__init__.py",
            "pkg/sub/m.py",
            "pkg/__pycache__/m.cpython-314.pyc",
            "venv/lib/site.py",
        ] {
            let p = src.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, "").unwrap();
        }
        let to = dir.path().join("to");
        copy_neighbours(&src, &to, &|n| n.ends_with(".py"), true).unwrap();
        for f in [
            "g.py",
            "helper.py",
            "pkg/__init__.py",
            "pkg/sub/__init__.py",
            "pkg/sub/m.py",
        ] {
            assert!(to.join(f).is_file(), "{f}");
        }
        for f in ["notes.txt", ".hidden.py", "pkg/__pycache__", "venv"] {
            assert!(!to.join(f).exists(), "{f}");
        }
    }

    #[test]
    fn the_output_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/b/g.wasm");
        write_output(&out, b"\0asm").unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"\0asm");
        let names: Vec<_> = fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["g.wasm"]);
        // A folder where the file should go: an error, no temporary file left.
        let e = write_output(dir.path().join("a").as_path(), b"x").unwrap_err();
        assert!(format!("{e:#}").contains("cannot write"), "{e:#}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_toolchain_installs_once_and_again_when_its_stamp_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut installs = 0;
        let t = Toolchain::new(dir.path(), "lang", "v1", "bin/tool");
        let install = |d: &Path| -> anyhow::Result<()> {
            fs::create_dir_all(d.join("bin"))?;
            fs::write(d.join("bin/tool"), "")?;
            Ok(())
        };
        let got = t
            .ensure(|d| {
                installs += 1;
                install(d)
            })
            .unwrap()
            .to_path_buf();
        assert_eq!(got, dir.path().join("lang"));
        t.ensure(|_| {
            installs += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(installs, 1);
        // A failed install leaves no stamp: the next build tries again.
        let t2 = Toolchain::new(dir.path(), "lang", "v2", "bin/tool");
        assert!(t2.ensure(|_| bail!("no network")).is_err());
        assert!(!t2.is_installed() && !t.is_installed());
        t2.ensure(install).unwrap();
        assert!(t2.is_installed());
        // Its program gone: installed again.
        fs::remove_file(dir.path().join("lang/bin/tool")).unwrap();
        assert!(!t2.is_installed());
        t2.ensure(install).unwrap();
        assert!(t2.is_installed());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "...\nb\nc");
        assert_eq!(tail("a\n", 5), "a");
    }
}
