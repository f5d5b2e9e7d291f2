//! The end-to-end harness: real `sluice` processes (`sim`, `run`), their output folders, and an
//! independent reading of what they wrote.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub mod s3;

/// The `sluice` binary built by `cargo build`: `$SLUICE_BIN`, else next to the test executable.
pub fn sluice_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/sluice
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("sluice");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` first (scripts/test does)",
        bin.display()
    );
    bin
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is killed when dropped, with its stderr collected.
pub struct Process {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Process {
    fn spawn(mut cmd: Command) -> anyhow::Result<(Process, Option<std::process::ChildStdout>)> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(&mut pipe);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let stdout = child.stdout.take();
        Ok((Process { child, stderr }, stdout))
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends a signal (`TERM`, `KILL`, `INT`).
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} failed");
        Ok(())
    }

    /// Waits for exit, at most `timeout`; returns whether it exited successfully.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        let status = wait_for("process exit", timeout, || {
            self.child.try_wait().ok().flatten()
        })?;
        Ok(status.success())
    }

    /// The OS process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sluice sim` as a process on a free loopback port.
pub struct Sim {
    /// The process.
    pub process: Process,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every flow record it wrote to a subscriber (NDJSON).
    pub sent_log: PathBuf,
}

impl Sim {
    /// Starts the simulator with extra arguments; `--listen` and `--sent-log` are set here.
    pub fn start(dir: &Path, args: &[&str]) -> anyhow::Result<Sim> {
        Self::start_on("127.0.0.1:0", dir, args)
    }

    /// The same on a given address (to restart an analyzer on the same port).
    pub fn start_on(listen: &str, dir: &Path, args: &[&str]) -> anyhow::Result<Sim> {
        let sent_log = dir.join(format!(
            "sent-{}.ndjson",
            std::process::id() ^ rand_suffix()
        ));
        let mut cmd = Command::new(sluice_bin());
        cmd.arg("sim")
            .args(["--listen", listen])
            .arg("--sent-log")
            .arg(&sent_log)
            .args(args);
        let (process, stdout) = Process::spawn(cmd)?;
        let mut lines = BufReader::new(stdout.expect("piped stdout")).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                bail!("sim exited before listening: {}", process.stderr());
            };
            if let Some(addr) = line?.strip_prefix("sluice sim listening on ") {
                break addr.trim().parse()?;
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Sim {
            process,
            addr,
            sent_log,
        })
    }

    /// A time-compressed simulator (0.5 s updates, 2 s expiry, 0.3 s batches) that keeps
    /// `flows` flows alive and sends `total` records at `rate` per second, then nothing more.
    pub fn start_fast(
        dir: &Path,
        flows: u32,
        rate: u32,
        total: u32,
        seed: u32,
    ) -> anyhow::Result<Sim> {
        Self::start_fast_with(dir, flows, rate, total, seed, &[])
    }

    /// [`Sim::start_fast`] with more `sluice sim` arguments (say, `--topology <file>`).
    pub fn start_fast_with(
        dir: &Path,
        flows: u32,
        rate: u32,
        total: u32,
        seed: u32,
        extra: &[&str],
    ) -> anyhow::Result<Sim> {
        let (flows, rate, total, seed) = (
            flows.to_string(),
            rate.to_string(),
            total.to_string(),
            seed.to_string(),
        );
        let mut args = vec![
            "--rate",
            &rate,
            "--flows",
            &flows,
            "--update-secs",
            "0.5",
            "--expire-secs",
            "2",
            "--batch-secs",
            "0.3",
            "--total",
            &total,
            "--seed",
            &seed,
        ];
        args.extend_from_slice(extra);
        Self::start(dir, &args)
    }

    /// The subscriber URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/subscriber/flow", self.addr)
    }

    /// Flow records sent so far, as JSON values in order.
    pub fn sent(&self) -> Vec<serde_json::Value> {
        read_ndjson(&self.sent_log)
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// Canonical text of each record (keys sorted), counted: sent and exported records compare as
/// multisets, so a record lost or written twice shows.
pub fn multiset(
    records: impl IntoIterator<Item = serde_json::Value>,
) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in records {
        *m.entry(r.to_string()).or_default() += 1;
    }
    m
}

/// Reads an NDJSON file, ignoring a torn last line.
pub fn read_ndjson(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `sluice run <file>` as a process.
pub fn start_run(config: &Path) -> anyhow::Result<Process> {
    let mut cmd = Command::new(sluice_bin());
    cmd.arg("run")
        .arg(config)
        .env("RUST_LOG", "info,sluice::pipeline=debug");
    Ok(Process::spawn(cmd)?.0)
}

/// How many flows `sluice run` has logged as received (from its debug log).
pub fn received_total(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.contains("message received"))
        .filter_map(|l| {
            l.split("received_total=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// One object written by the `file` writer.
#[derive(Debug)]
pub struct StoredObject {
    /// The key (path below the bucket folder).
    pub key: String,
    /// The bucket folder name.
    pub bucket: String,
    /// The metadata file's content.
    pub meta: serde_json::Value,
    /// The content, decompressed when it is gzip.
    pub content: Vec<u8>,
}

/// Every object below `root` (`<root>/<bucket>/<key>`), sorted by bucket and key.
pub fn read_objects(root: &Path) -> anyhow::Result<Vec<StoredObject>> {
    let mut out = Vec::new();
    for bucket in std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let bucket = bucket?;
        let mut stack = vec![bucket.path()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                let name = path.to_string_lossy().to_string();
                if path.is_dir() {
                    stack.push(path);
                } else if !name.ends_with(".meta.json") && !name.contains(".tmp-") {
                    let meta: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(format!("{name}.meta.json"))?)?;
                    let raw = std::fs::read(&path)?;
                    let content = if meta["content_encoding"] == "gzip" {
                        let mut v = Vec::new();
                        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut v)?;
                        v
                    } else {
                        raw
                    };
                    let key = path
                        .strip_prefix(bucket.path())?
                        .to_string_lossy()
                        .to_string();
                    out.push(StoredObject {
                        key,
                        bucket: bucket.file_name().to_string_lossy().to_string(),
                        meta,
                        content,
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.bucket, &a.key).cmp(&(&b.bucket, &b.key)));
    Ok(out)
}

/// Runs `sluice run <config>` against `sim` until the simulator has sent `total` records and
/// sluice has received them all, then sends SIGTERM (which flushes every pending buffer) and
/// waits for a clean exit. Every wait is bounded by `timeout`. Returns sluice's stderr.
pub fn run_until_drained(
    sim: &Sim,
    config: &Path,
    total: usize,
    timeout: Duration,
) -> anyhow::Result<String> {
    let mut run = start_run(config)?;
    wait_for(
        &format!("the simulator to send {total} records"),
        timeout,
        || (sim.sent().len() >= total).then_some(()),
    )?;
    let sent = sim.sent().len();
    anyhow::ensure!(
        sent == total,
        "the simulator sent {sent} records, not {total}"
    );
    wait_for("sluice to receive every record", timeout, || {
        (received_total(&run.stderr()) == total as u64).then_some(())
    })
    .with_context(|| run.stderr())?;
    run.signal("TERM")?;
    let clean = run.wait(timeout)?;
    let stderr = run.stderr();
    anyhow::ensure!(clean, "sluice run failed: {stderr}");
    Ok(stderr)
}

/// Milliseconds since the Unix epoch, from the wall clock.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `sluice serve` as a process on a free loopback port, with a data folder and an admin token.
pub struct Serve {
    /// The process.
    pub process: Process,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data folder.
    pub data_dir: PathBuf,
    /// The admin token (`SLUICE_ADMIN_TOKEN`).
    pub admin: String,
}

impl Serve {
    /// Starts `sluice serve --listen <listen> --data-dir <data_dir>` with the admin token in
    /// the environment and `extra` arguments, and waits for its `listening on` line.
    pub fn start_on(
        listen: &str,
        data_dir: &Path,
        admin: &str,
        extra: &[&str],
    ) -> anyhow::Result<Serve> {
        Self::start_env(listen, data_dir, admin, extra, &[])
    }

    /// [`Serve::start_on`] with more environment variables.
    pub fn start_env(
        listen: &str,
        data_dir: &Path,
        admin: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Serve> {
        let mut cmd = Command::new(sluice_bin());
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .args(["--listen", listen])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("SLUICE_ADMIN_TOKEN", admin)
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let (process, stdout) = Process::spawn(cmd)?;
        let mut lines = BufReader::new(stdout.expect("piped stdout")).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                bail!("serve exited before listening: {}", process.stderr());
            };
            if let Some(addr) = line?.strip_prefix("sluice serve listening on ") {
                break addr.trim().parse()?;
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Serve {
            process,
            addr,
            data_dir: data_dir.to_path_buf(),
            admin: admin.to_string(),
        })
    }

    /// The same on a free port.
    pub fn start(data_dir: &Path, admin: &str) -> anyhow::Result<Serve> {
        Self::start_on("127.0.0.1:0", data_dir, admin, &[])
    }

    /// On a free port with a server config file of `yaml` (written beside the data folder).
    pub fn start_with_config(data_dir: &Path, admin: &str, yaml: &str) -> anyhow::Result<Serve> {
        let path = data_dir.with_extension("sluice.yml");
        std::fs::write(&path, yaml)?;
        let path = path.to_string_lossy().to_string();
        Self::start_on("127.0.0.1:0", data_dir, admin, &["--config", &path])
    }

    /// The server's resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.process.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// A request with an optional bearer token and body (`content_type`, bytes).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> Response {
        http_request(self.addr, method, path, token, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}\n{}", self.process.stderr()))
    }

    /// A JSON request.
    pub fn json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> Response {
        let text = body.to_string();
        self.request(
            method,
            path,
            token,
            Some(("application/json", text.as_bytes())),
        )
    }

    /// A YAML request.
    pub fn yaml(&self, method: &str, path: &str, token: Option<&str>, yaml: &str) -> Response {
        self.request(
            method,
            path,
            token,
            Some(("application/yaml", yaml.as_bytes())),
        )
    }

    /// `GET /v1/pipelines/<id>/status` as `token`, which must answer 200.
    pub fn status(&self, token: &str, id: &str) -> serde_json::Value {
        let r = self.request(
            "GET",
            &format!("/v1/pipelines/{id}/status"),
            Some(token),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Creates a tenant as the admin; returns (id, token).
    pub fn tenant(&self, name: &str) -> (String, String) {
        let r = self.json(
            "POST",
            "/v1/tenants",
            Some(&self.admin),
            &serde_json::json!({ "name": name }),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        (
            v["id"].as_str().unwrap().to_string(),
            v["token"].as_str().unwrap().to_string(),
        )
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics if it isn't).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A minimal HTTP/1.1 client (one request per connection), enough for tests.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> anyhow::Result<Response> {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let bytes = match body {
        Some((content_type, bytes)) => {
            head.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                bytes.len()
            ));
            bytes
        }
        None => {
            head.push_str("Content-Length: 0\r\n");
            &[][..]
        }
    };
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // The server may answer (413) and close before reading a huge body: ignore write errors.
    let _ = stream.write_all(bytes);
    let mut raw = Vec::new();
    let mut reader = BufReader::new(stream);
    let _ = reader.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..line_end])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
