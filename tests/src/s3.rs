//! A real S3-compatible server for the tests, and what goes around it.
//!
//! [`MotoServer`] runs the moto server (PyPI `moto[server]`, installed by `.ci/run`) on a free
//! loopback port; its own client (aws-sdk-s3, not sluice's writer) creates buckets and reads
//! objects back. [`TcpProxy`] sits between sluice and the store and can cut the link while the
//! server keeps its objects (moto keeps them in memory). [`FakeIam`] speaks the IBM IAM api key
//! grant and fronts moto as IBM COS would: requests need a valid `Authorization: Bearer` token.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;

use crate::{Process, sluice_bin, wait_for};

/// The moto server: `$SLUICE_MOTO_SERVER`, else `moto_server` on `PATH`.
pub fn moto_server_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_MOTO_SERVER") {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "SLUICE_MOTO_SERVER={} does not exist: run `. scripts/s3-server` (or .ci/run) to install the moto S3 server",
            path.display()
        );
        return Ok(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.is_file())
        .context(
            "the moto S3 server is not installed: `moto_server` is not on PATH. \
             `.ci/run` and scripts/test install it (scripts/s3-server: `moto[server]` from PyPI), \
             or set SLUICE_MOTO_SERVER to its path",
        )
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One object read back from the store.
#[derive(Debug, Clone)]
pub struct S3Object {
    /// Key.
    pub key: String,
    /// The stored bytes.
    pub raw: Vec<u8>,
    /// The content, gunzipped when Content-Encoding is gzip.
    pub content: Vec<u8>,
    /// Content-Type.
    pub content_type: Option<String>,
    /// Content-Encoding.
    pub content_encoding: Option<String>,
    /// User metadata (`x-amz-meta-*`, without the prefix).
    pub metadata: BTreeMap<String, String>,
}

/// The moto server as a process, with a client.
pub struct MotoServer {
    /// The process (stopped on drop).
    pub process: Process,
    /// Its address.
    pub addr: SocketAddr,
    /// HMAC access key accepted (any when started without auth).
    pub access_key: String,
    /// HMAC secret key.
    pub secret_key: String,
    client: aws_sdk_s3::Client,
    rt: tokio::runtime::Runtime,
}

impl MotoServer {
    /// Starts moto without authentication (any or no credentials are accepted).
    pub fn start() -> anyhow::Result<Self> {
        Self::spawn(false)
    }

    /// Starts moto checking SigV4 signatures: an IAM user with an S3 policy and an access key
    /// are created first (moto's first 3 requests are unauthenticated), then every request
    /// must be signed with that key.
    pub fn start_with_auth() -> anyhow::Result<Self> {
        Self::spawn(true)
    }

    fn spawn(auth: bool) -> anyhow::Result<Self> {
        // `free_port` races with the other tests' listeners: the readiness check may have
        // reached someone else's, and a moto that could not bind has exited. Then start again
        // on another port.
        let mut failed = None;
        for _ in 0..3 {
            match Self::spawn_once(auth) {
                Ok(moto) => return Ok(moto),
                Err(e) => failed = Some(e),
            }
        }
        Err(failed.unwrap_or_else(|| anyhow::anyhow!("moto was not started")))
    }

    fn spawn_once(auth: bool) -> anyhow::Result<Self> {
        let bin = moto_server_bin()?;
        let port = free_port();
        let mut cmd = Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        }
        let (mut process, stdout) = Process::spawn(cmd)?;
        if let Some(mut stdout) = stdout {
            std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        }
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let ready = wait_for("the moto server to listen", Duration::from_secs(60), || {
            if let Ok(Some(status)) = process.child.try_wait() {
                return Some(Err(status));
            }
            TcpStream::connect(addr).ok().map(|_| Ok(()))
        })?;
        if let Err(status) = ready {
            bail!("{} exited ({status}): {}", bin.display(), process.stderr());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let (access_key, secret_key) = if auth {
            rt.block_on(create_iam_user(addr))
                .with_context(|| format!("creating moto's IAM user: {}", process.stderr()))?
        } else {
            ("test".to_string(), "test".to_string())
        };
        let client = client(&format!("http://{addr}"), &access_key, &secret_key);
        rt.block_on(client.list_buckets().send()).map_err(|e| {
            anyhow::anyhow!(
                "moto on {addr} does not answer: {e:?}; {}",
                process.stderr()
            )
        })?;
        Ok(MotoServer {
            process,
            addr,
            access_key,
            secret_key,
            client,
            rt,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        self.rt
            .block_on(self.client.create_bucket().bucket(bucket).send())
            .map_err(|e| anyhow::anyhow!("create bucket {bucket}: {e:?}"))?;
        Ok(())
    }

    /// Stores an object (to test reading, or to pre-fill a key).
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) -> anyhow::Result<()> {
        self.rt
            .block_on(
                self.client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(body.to_vec()))
                    .send(),
            )
            .map_err(|e| anyhow::anyhow!("put {bucket}/{key}: {e:?}"))?;
        Ok(())
    }

    /// Every key in a bucket, sorted; empty when the bucket does not exist.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.rt.block_on(async {
            let mut keys = Vec::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .into_paginator()
                .send();
            while let Some(Ok(page)) = pages.next().await {
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(String::from)),
                );
            }
            keys.sort();
            keys
        })
    }

    /// Reads one object.
    pub fn get(&self, bucket: &str, key: &str) -> anyhow::Result<S3Object> {
        self.rt.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("get {bucket}/{key}: {e:?}"))?;
            let content_type = out.content_type().map(String::from);
            let content_encoding = out.content_encoding().map(String::from);
            let metadata: BTreeMap<String, String> = out
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            let raw = out.body.collect().await?.into_bytes().to_vec();
            let content = if content_encoding.as_deref() == Some("gzip") {
                let mut v = Vec::new();
                flate2::read::GzDecoder::new(&raw[..])
                    .read_to_end(&mut v)
                    .with_context(|| format!("gunzip {key}"))?;
                v
            } else {
                raw.clone()
            };
            Ok(S3Object {
                key: key.to_string(),
                raw,
                content,
                content_type,
                content_encoding,
                metadata,
            })
        })
    }

    /// Every object of a bucket, sorted by key.
    pub fn objects(&self, bucket: &str) -> anyhow::Result<Vec<S3Object>> {
        self.keys(bucket)
            .iter()
            .map(|k| self.get(bucket, k))
            .collect()
    }
}

/// An S3 client for the tests (path-style, no retries beyond the SDK's default).
pub fn client(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            access_key, secret_key, None, None, "tests",
        ))
        .http_client(http)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Creates user `sluice` with an `s3:*` policy and returns its access key. moto routes a
/// request by the service in its credential scope; the signature of these first requests is
/// not checked.
async fn create_iam_user(addr: SocketAddr) -> anyhow::Result<(String, String)> {
    let http = reqwest::Client::new();
    let auth = "AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0";
    let call = |params: Vec<(&'static str, String)>| {
        let http = http.clone();
        async move {
            let response = http
                .post(format!("http://{addr}/"))
                .header("authorization", auth)
                .form(&params)
                .send()
                .await?;
            let status = response.status();
            let text = response.text().await?;
            anyhow::ensure!(status.is_success(), "IAM {status}: {text}");
            Ok::<String, anyhow::Error>(text)
        }
    };
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    call(vec![
        ("Action", "CreateUser".into()),
        ("UserName", "sluice".into()),
    ])
    .await?;
    call(vec![
        ("Action", "PutUserPolicy".into()),
        ("UserName", "sluice".into()),
        ("PolicyName", "s3".into()),
        ("PolicyDocument", policy.into()),
    ])
    .await?;
    let text = call(vec![
        ("Action", "CreateAccessKey".into()),
        ("UserName", "sluice".into()),
    ])
    .await?;
    let field = |name: &str| -> anyhow::Result<String> {
        let start = text
            .find(&format!("<{name}>"))
            .with_context(|| format!("no {name} in {text}"))?
            + name.len()
            + 2;
        let end = text[start..]
            .find('<')
            .with_context(|| format!("bad {name} in {text}"))?;
        Ok(text[start..start + end].to_string())
    };
    Ok((field("AccessKeyId")?, field("SecretAccessKey")?))
}

/// A TCP relay on a free loopback port that can be cut (as a store outage would) and restored.
pub struct TcpProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stopped: Arc<AtomicBool>,
}

impl TcpProxy {
    /// Relays to `target`; starts up.
    pub fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stopped = Arc::new(AtomicBool::new(false));
        let (up2, open2, stopped2) = (up.clone(), open.clone(), stopped.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client); // refused: the connection closes at once
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                {
                    let mut open = open2.lock().unwrap();
                    open.retain(|s| s.peer_addr().is_ok());
                    if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                        open.push(a);
                        open.push(b);
                    }
                }
                std::thread::spawn(move || relay(client, s2));
                std::thread::spawn(move || relay(server, c2));
            }
        });
        Ok(TcpProxy {
            addr,
            up,
            open,
            stopped,
        })
    }

    /// `http://<addr>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Relays again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.cut();
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

fn relay(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// What the IBM IAM stand-in and its COS gate saw.
#[derive(Debug, Default)]
pub struct IamLog {
    /// Token requests answered with a token.
    pub tokens_issued: usize,
    /// Token requests refused (wrong grant type or api key).
    pub token_requests_refused: usize,
    /// Store requests let through, by token.
    pub requests_by_token: BTreeMap<String, usize>,
    /// Store requests refused with 403 (no, unknown, expired or revoked token).
    pub requests_refused: usize,
    /// The `Authorization` values of refused requests.
    pub refused_authorizations: Vec<String>,
}

#[derive(Default)]
struct IamState {
    log: IamLog,
    /// token → when it expires.
    valid: BTreeMap<String, Instant>,
    /// Lifetime of the tokens issued next.
    expires_in: Duration,
}

/// IBM Cloud IAM's api key grant (`POST /identity/token`) and, on `cos_addr`, a gate that
/// passes S3 requests to moto only with a valid bearer token, as IBM COS does.
pub struct FakeIam {
    /// The token endpoint's address.
    pub addr: SocketAddr,
    /// The gate's address (the COS endpoint to configure).
    pub cos_addr: SocketAddr,
    state: Arc<Mutex<IamState>>,
    _rt: tokio::runtime::Runtime,
}

impl FakeIam {
    /// Issues tokens for `api_key` that expire after `expires_in`; the gate forwards to `store`.
    pub fn start(api_key: &str, expires_in: Duration, store: SocketAddr) -> anyhow::Result<Self> {
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let state = Arc::new(Mutex::new(IamState {
            expires_in,
            ..IamState::default()
        }));
        let iam_listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let cos_listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let (addr, cos_addr) = (iam_listener.local_addr()?, cos_listener.local_addr()?);

        let key = api_key.to_string();
        let token_state = state.clone();
        let token = move |headers: HeaderMap, body: String| {
            let state = token_state.clone();
            let key = key.clone();
            async move {
                let form: BTreeMap<String, String> = body
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (decode(k), decode(v)))
                    .collect();
                let is_form = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
                let mut st = state.lock().unwrap();
                if !is_form
                    || form.get("grant_type").map(String::as_str)
                        != Some("urn:ibm:params:oauth:grant-type:apikey")
                    || form.get("apikey") != Some(&key)
                {
                    st.log.token_requests_refused += 1;
                    return (
                        StatusCode::BAD_REQUEST,
                        axum::Json(serde_json::json!({
                            "errorCode": "BXNIM0415E",
                            "errorMessage": "Provided API key could not be found."
                        })),
                    );
                }
                st.log.tokens_issued += 1;
                let value = format!("tok-{}", st.log.tokens_issued);
                let expires_in = st.expires_in;
                st.valid.insert(value.clone(), Instant::now() + expires_in);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                (
                    StatusCode::OK,
                    axum::Json(serde_json::json!({
                        "access_token": value,
                        "refresh_token": "not_supported",
                        "token_type": "Bearer",
                        "expires_in": expires_in.as_secs(),
                        "expiration": now + expires_in.as_secs(),
                        "scope": "ibm openid"
                    })),
                )
            }
        };
        let iam_app = axum::Router::new().route("/identity/token", axum::routing::post(token));
        rt.spawn(async move {
            let _ = axum::serve(iam_listener, iam_app).await;
        });

        let http = reqwest::Client::new();
        let gate = move |State(state): State<Arc<Mutex<IamState>>>,
                         request: axum::extract::Request| {
            let http = http.clone();
            async move {
                let auth = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let allowed = {
                    let mut st = state.lock().unwrap();
                    let token = auth.strip_prefix("Bearer ").unwrap_or("");
                    let ok = st.valid.get(token).is_some_and(|exp| Instant::now() < *exp);
                    if ok {
                        *st.log
                            .requests_by_token
                            .entry(token.to_string())
                            .or_default() += 1;
                    } else {
                        st.log.requests_refused += 1;
                        st.log.refused_authorizations.push(auth.clone());
                    }
                    ok
                };
                if !allowed {
                    return (
                        StatusCode::FORBIDDEN,
                        [("content-type", "application/xml")],
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>".to_string(),
                    )
                        .into_response();
                }
                let (parts, body) = request.into_parts();
                let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
                    return StatusCode::BAD_REQUEST.into_response();
                };
                let url = format!(
                    "http://{store}{}",
                    parts.uri.path_and_query().map_or("/", |p| p.as_str())
                );
                let mut forward = http.request(parts.method.clone(), url).body(body);
                for (name, value) in &parts.headers {
                    if !matches!(
                        name.as_str(),
                        "authorization" | "host" | "content-length" | "connection" | "expect"
                    ) {
                        forward = forward.header(name, value);
                    }
                }
                match forward.send().await {
                    Ok(response) => {
                        let status = response.status();
                        let mut headers = HeaderMap::new();
                        for (name, value) in response.headers() {
                            if !matches!(
                                name.as_str(),
                                "content-length" | "transfer-encoding" | "connection"
                            ) {
                                headers.insert(name.clone(), value.clone());
                            }
                        }
                        let bytes = response.bytes().await.unwrap_or_default();
                        (status, headers, bytes).into_response()
                    }
                    Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
                }
            }
        };
        let cos_app = axum::Router::new().fallback(gate).with_state(state.clone());
        rt.spawn(async move {
            let _ = axum::serve(cos_listener, cos_app).await;
        });
        Ok(FakeIam {
            addr,
            cos_addr,
            state,
            _rt: rt,
        })
    }

    /// The token endpoint URL.
    pub fn token_url(&self) -> String {
        format!("http://{}/identity/token", self.addr)
    }

    /// The COS endpoint URL.
    pub fn cos_endpoint(&self) -> String {
        format!("http://{}", self.cos_addr)
    }

    /// Sets the lifetime of the tokens issued from now on.
    pub fn set_expires_in(&self, expires_in: Duration) {
        self.state.lock().unwrap().expires_in = expires_in;
    }

    /// Makes every issued token invalid (as a revocation would).
    pub fn revoke_all(&self) {
        self.state.lock().unwrap().valid.clear();
    }

    /// Reads the log.
    pub fn log<T>(&self, f: impl FnOnce(&IamLog) -> T) -> T {
        f(&self.state.lock().unwrap().log)
    }
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `sluice run <file>` with extra environment variables (e.g. `XDG_STATE_HOME`).
pub fn start_run_env(config: &Path, env: &[(&str, &Path)]) -> anyhow::Result<Process> {
    let mut cmd = Command::new(sluice_bin());
    cmd.arg("run").arg(config).env(
        "RUST_LOG",
        "info,sluice::pipeline=debug,sluice::sinks=debug",
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(Process::spawn(cmd)?.0)
}

/// A bucket as the end-to-end tests read it: every key once, with its object and the JSON
/// records of its (gunzipped) content.
pub struct Bucket<'a> {
    moto: &'a MotoServer,
    /// The bucket name.
    pub name: &'a str,
    /// Key → object and its records.
    pub seen: BTreeMap<String, (S3Object, Vec<serde_json::Value>)>,
}

impl<'a> Bucket<'a> {
    /// An empty view of `name` on `moto`.
    pub fn new(moto: &'a MotoServer, name: &'a str) -> Self {
        Bucket {
            moto,
            name,
            seen: BTreeMap::new(),
        }
    }

    /// Reads the keys not seen yet; returns the records held.
    pub fn refresh(&mut self) -> usize {
        for key in self.moto.keys(self.name) {
            if !self.seen.contains_key(&key) {
                let object = self.moto.get(self.name, &key).unwrap();
                let records: Vec<serde_json::Value> = serde_json::from_slice(&object.content)
                    .unwrap_or_else(|e| panic!("{key}: not a JSON array after gunzip: {e}"));
                self.seen.insert(key, (object, records));
            }
        }
        self.records()
    }

    /// Records held.
    pub fn records(&self) -> usize {
        self.seen.values().map(|(_, r)| r.len()).sum()
    }

    /// Waits until the bucket holds `n` records; on timeout panics with `log()` (the process's
    /// stderr).
    pub fn wait_records(&mut self, n: usize, timeout: Duration, log: impl Fn() -> String) {
        let what = format!("{n} records in bucket {}", self.name);
        crate::wait_for(&what, timeout, || {
            std::thread::sleep(Duration::from_millis(200));
            (self.refresh() >= n).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e} (have {})\n{}", self.records(), log()));
    }

    /// Every record held.
    pub fn all_records(&self) -> Vec<serde_json::Value> {
        self.seen.values().flat_map(|(_, r)| r.clone()).collect()
    }

    /// Keys `logs/<tag>/<stream>/<seq 8 digits>.gz`, seqs 0..n per stream, gzip JSON bodies,
    /// and exactly the user metadata `first-timestamp`, `last-timestamp`, `num-records`.
    pub fn check_objects(&self) {
        let mut seqs: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
        for (key, (object, records)) in &self.seen {
            let parts: Vec<&str> = key.split('/').collect();
            assert_eq!(parts.len(), 4, "{key}");
            assert_eq!(parts[0], "logs");
            assert!(
                ["internal", "egress", "ingress", "other"].contains(&parts[1]),
                "{key}"
            );
            assert!(
                parts[2].len() == 16 && parts[2].ends_with('Z') && parts[2].as_bytes()[8] == b'T',
                "{key}"
            );
            let (seq, ext) = parts[3].split_once('.').unwrap();
            assert_eq!((seq.len(), ext), (8, "gz"), "{key}");
            seqs.entry((parts[1].into(), parts[2].into()))
                .or_default()
                .push(seq.parse().unwrap());
            assert_eq!(object.content_type.as_deref(), Some("application/json"));
            assert_eq!(object.content_encoding.as_deref(), Some("gzip"));
            assert_eq!(&object.raw[..2], b"\x1f\x8b", "{key}: gzip bytes");
            let m = &object.metadata;
            assert_eq!(
                m.keys().map(String::as_str).collect::<Vec<_>>(),
                ["first-timestamp", "last-timestamp", "num-records"],
                "{key}"
            );
            assert_eq!(m["num-records"], records.len().to_string(), "{key}");
            assert!(!records.is_empty(), "{key}");
            let first: i64 = m["first-timestamp"].parse().unwrap();
            let last: i64 = m["last-timestamp"].parse().unwrap();
            assert!(first <= last && first > 1_500_000_000_000, "{key}: {m:?}");
        }
        for ((tag, stream), mut s) in seqs {
            s.sort();
            assert_eq!(
                s,
                (0..s.len() as u64).collect::<Vec<_>>(),
                "{tag}/{stream}: seqs must be 0..n"
            );
        }
    }
}
