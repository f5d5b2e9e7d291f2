//! Python guests: componentize-py packs CPython, the shim (guest-sdk/python/) and the guest's
//! modules into a component, with the interpreter initialised at build time.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use super::{
    Stage, Toolchain, World, copy_neighbours, find_program, pick_world, run_captured, step, tail,
};

const SHIM_APP: &str = include_str!("../../../guest-sdk/python/sluice_app.py");
const SHIM_SLUICE: &str = include_str!("../../../guest-sdk/python/sluice.py");

/// The componentize-py release builds are made with (guest-sdk/README.md says why this one).
const COMPONENTIZE_PY: &str = "0.25.1";

/// Module names the build takes for itself: the shim's, the bindings' and what the shim
/// imports (a guest file of that name would shadow it).
const TAKEN: &[&str] = &[
    "sluice",
    "sluice_app",
    "sluice_user_module",
    "wit_world",
    "json",
    "sys",
    "traceback",
    "importlib",
];

/// Files of a new Python project (`sluice guest new --lang python`).
pub(super) fn scaffold() -> Vec<(String, String)> {
    [
        (
            "transform.py",
            include_str!("templates/python/transform.py").to_string(),
        ),
        (
            "test_transform.py",
            include_str!("templates/python/test_transform.py").to_string(),
        ),
        // The real module: it also works natively, for the tests.
        ("sluice.py", SHIM_SLUICE.to_string()),
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
    let module = module_name(file)?;
    let source =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let world = pick_world(file, &super::source::python_worlds(&source), world)?;
    let tool = install(toolchains)?;

    let stage = Stage::new()?;
    let wit = stage.wit()?;
    let app = stage.path().join("app");
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    copy_neighbours(dir, &app, &|n| n.ends_with(".py"), true)?;
    // Written after the guest's neighbours: a `sluice.py` there (the native stand-in of
    // `sluice guest new`) gives way to the shim's.
    stage.write("app/sluice.py", SHIM_SLUICE)?;
    stage.write("app/sluice_app.py", SHIM_APP)?;
    stage.write(
        "app/sluice_user_module.py",
        &format!("NAME = \"{module}\"\n"),
    )?;
    let out = stage.path().join("out.wasm");

    step(format!(
        "building {} (world {world}) with componentize-py {COMPONENTIZE_PY}",
        file.display()
    ));
    let mut cmd = Command::new(tool.join("bin").join("componentize-py"));
    cmd.arg("-q")
        .arg("-d")
        .arg(&wit)
        .args(["-w", world.as_str(), "componentize", "-p"])
        .arg(&app)
        .arg("-o")
        .arg(&out)
        .arg("sluice_app")
        .current_dir(stage.path())
        // componentize-py adds $VIRTUAL_ENV's site-packages to the guest's path, and the
        // host's PYTHON* variables would steer the interpreter it runs the build in.
        .env_remove("VIRTUAL_ENV")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONSTARTUP")
        // A failed build would end with a Rust backtrace under the Python traceback.
        .env("RUST_BACKTRACE", "0");
    let result = run_captured(&mut cmd, "componentize-py")?;
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        bail!(
            "building {} failed:\n{}",
            file.display(),
            trim_error(&stderr, dir)
        );
    }
    let bytes = std::fs::read(&out).context("componentize-py wrote no component")?;
    Ok((bytes, world))
}

/// The module name of the guest's file: its stem, which Python must be able to import and
/// which must not take a name the build needs.
pub(super) fn module_name(file: &Path) -> anyhow::Result<String> {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let identifier = stem.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !identifier {
        bail!(
            "{}: the file name is the module name Python imports: letters, digits and _, not starting with a digit",
            file.display()
        );
    }
    if TAKEN.contains(&stem) || stem.starts_with("componentize_py") {
        bail!(
            "{}: the build uses the module name `{stem}` itself: rename the file",
            file.display()
        );
    }
    Ok(stem.to_string())
}

/// The componentize-py venv, installed on first use.
fn install(toolchains: &Path) -> anyhow::Result<std::path::PathBuf> {
    let stamp = format!("componentize-py=={COMPONENTIZE_PY}\n");
    let toolchain = Toolchain::new(toolchains, "python", &stamp, "bin/componentize-py");
    let dir = toolchain.ensure(|dir| {
        let python = prerequisites()?;
        step(format!(
            "installing componentize-py {COMPONENTIZE_PY} into {} (once)",
            dir.display()
        ));
        let mut venv = Command::new(&python);
        venv.args(["-m", "venv", "--clear"]).arg(dir);
        let r = run_captured(&mut venv, "python3 -m venv")?;
        if !r.status.success() {
            bail!(
                "python3 -m venv {} failed:\n{}",
                dir.display(),
                tail(&String::from_utf8_lossy(&r.stderr), 20)
            );
        }
        let mut pip = Command::new(dir.join("bin").join("pip"));
        pip.args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .arg(format!("componentize-py=={COMPONENTIZE_PY}"))
        .env_remove("PIP_REQUIRE_VIRTUALENV");
        let r = run_captured(&mut pip, "pip")?;
        if !r.status.success() {
            bail!(
                "pip install componentize-py=={COMPONENTIZE_PY} failed:\n{}",
                tail(&String::from_utf8_lossy(&r.stderr), 20)
            );
        }
        Ok(())
    })?;
    Ok(dir.to_path_buf())
}

/// python3, 3.9 or newer (componentize-py's wheel is for CPython ≥ 3.9), able to make a venv.
fn prerequisites() -> anyhow::Result<std::path::PathBuf> {
    let Some(python) = find_program("python3") else {
        bail!(
            "python3 is missing: Python guests are built with componentize-py, which sluice installs into a venv (Debian: apt-get install python3 python3-venv)"
        );
    };
    let mut check = Command::new(&python);
    check.args([
        "-c",
        "import sys\nif sys.version_info < (3, 9): sys.exit(3)\nimport venv, ensurepip",
    ]);
    let r = run_captured(&mut check, "python3")?;
    match r.status.code() {
        Some(0) => Ok(python),
        Some(3) => bail!(
            "{} is older than Python 3.9, which componentize-py needs (Debian 11 and later have a newer python3)",
            python.display()
        ),
        _ => bail!(
            "{} can't make a venv (its venv or ensurepip module is missing): Debian: apt-get install python3-venv",
            python.display()
        ),
    }
}

/// The part of componentize-py's error output worth showing: the Python traceback of the
/// build-time import (syntax error, exception at the top level, the shim's check), with the
/// frames of the shim and of Python's own modules left out and the guest's files named by their
/// real folder. componentize-py maps the (only) `-p` folder to `/0/` inside the interpreter;
/// what follows `Caused by:` repeats the last line.
fn trim_error(stderr: &str, dir: &Path) -> String {
    const INNER: &str = "AssertionError: Traceback (most recent call last):";
    let text = match stderr.find(INNER) {
        Some(at) => &stderr[at + "AssertionError: ".len()..],
        None => stderr,
    };
    let text = text.split("\nCaused by:").next().unwrap_or(text);
    let shown_dir = format!("{}/", dir.display());
    let mut out: Vec<String> = Vec::new();
    let mut frames = 0;
    // Whether the lines under the current `File "..."` line belong to a frame that is kept.
    let mut keep = true;
    for line in text.trim_end().lines() {
        if let Some(rest) = line.strip_prefix("  File \"") {
            let path = rest.split('"').next().unwrap_or("");
            keep = path.starts_with("/0/")
                && !path.ends_with("/sluice_app.py")
                && !path.ends_with("/sluice.py");
            if keep {
                frames += 1;
                out.push(line.replacen("\"/0/", &format!("\"{shown_dir}"), 1));
            }
            continue;
        }
        if line.starts_with("    ") {
            if keep {
                out.push(line.to_string());
            }
            continue;
        }
        keep = true;
        out.push(line.to_string());
    }
    if frames == 0 {
        out.retain(|l| !l.starts_with("Traceback (most recent call last)"));
    }
    let text = out.join("\n");
    let text = text.trim();
    if text.is_empty() {
        tail(stderr, 40)
    } else {
        tail(text, 40)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_file_needs_an_importable_name_of_its_own() {
        assert_eq!(
            module_name(Path::new("dir/anonymize.py")).unwrap(),
            "anonymize"
        );
        assert_eq!(module_name(Path::new("_t2.py")).unwrap(), "_t2");
        for bad in ["my-guest.py", "2x.py", "a b.py", "é.py"] {
            let e = module_name(Path::new(bad)).unwrap_err().to_string();
            assert!(e.contains("letters, digits and _"), "{bad}: {e}");
        }
        for taken in [
            "sluice.py",
            "sluice_app.py",
            "json.py",
            "componentize_py_types.py",
        ] {
            let e = module_name(Path::new(taken)).unwrap_err().to_string();
            assert!(e.contains("rename the file"), "{taken}: {e}");
        }
    }

    // componentize-py 0.25.1's output for a guest with a syntax error.
    const SYNTAX: &str = r#"Traceback (most recent call last):
  File "/root/.cache/sluice/toolchains/python/bin/componentize-py", line 8, in <module>
    sys.exit(script())
             ^^^^^^^^
AssertionError: Traceback (most recent call last):
  File "/0/sluice_app.py", line 34, in <module>
    _user = importlib.import_module(sluice_user_module.NAME)
  File "/python/importlib/__init__.py", line 88, in import_module
    return _bootstrap._gcd_import(name[level:], package, level)
           ~~~~~~~~~~~~~~~~~~~~~~^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/0/broken.py", line 3
    def transform(flows, config)
                                ^
SyntaxError: expected ':'


Caused by:
    SyntaxError: expected ':' (broken.py, line 3)
"#;

    // ... and for one without `transform` (the shim's check).
    const MISSING: &str = r#"Traceback (most recent call last):
  File "/root/.cache/sluice/toolchains/python/bin/componentize-py", line 8, in <module>
    sys.exit(script())
             ^^^^^^^^
AssertionError: Traceback (most recent call last):
  File "/0/sluice_app.py", line 49, in <module>
    raise TypeError(
        f"{sluice_user_module.NAME}: a {_KIND} guest must define `def {_SIGNATURE}`"
    )
TypeError: broken: a transform guest must define `def transform(flows, config)`


Caused by:
    TypeError: broken: a transform guest must define `def transform(flows, config)`
"#;

    #[test]
    fn errors_show_the_guests_traceback_only() {
        assert_eq!(
            trim_error(SYNTAX, Path::new("/home/me/g")),
            "Traceback (most recent call last):\n  File \"/home/me/g/broken.py\", line 3\n    def transform(flows, config)\n                                ^\nSyntaxError: expected ':'"
        );
        assert_eq!(
            trim_error(MISSING, Path::new("g")),
            "TypeError: broken: a transform guest must define `def transform(flows, config)`"
        );
        // Anything else: its last lines, as they are.
        assert_eq!(
            trim_error("error: world `x` not found\n", Path::new(".")),
            "error: world `x` not found"
        );
    }
}
