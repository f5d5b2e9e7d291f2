//! The Skydive flow subscriber: a WebSocket client of an analyzer's `/ws/subscriber/flow`
//! (docs/skydive-protocol.md §1, §2, §8 "Rust client").
//!
//! [`run`] connects, decodes `store` messages into [`FlowBatch`]es and sends them on, and
//! reconnects with capped exponential backoff until it is cancelled. A malformed flow is dropped
//! on its own; the rest of its message goes on.

pub mod decode;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt as _;
use rand::Rng as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, warn};

use crate::egress::{EgressError, EgressPolicy, redact_url};
use crate::log_throttle::LogThrottle;
use crate::skydive::flow::Flow;
use decode::{Decoded, decode};

/// Largest message accepted from the analyzer (100 flows are far below this).
const MAX_MESSAGE_SIZE: usize = 64 << 20;
/// How long the TCP connect plus the upgrade may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Decoded flows a subscriber may have queued for its pipeline (sent and not yet processed):
/// with one message being read (at most [`MAX_MESSAGE_SIZE`]), this bounds what a pipeline
/// holds however fast its analyzer sends (docs/stages.md §4).
pub const MAX_QUEUED_FLOWS: usize = 50_000;
/// How long a message waits for room in that queue before it is dropped and counted under
/// `backpressure`: the socket is not read meanwhile, so this stays below the analyzer's ping
/// timeout (Skydive's default is 5 s), which would otherwise end the connection.
pub const BACKPRESSURE_WAIT: Duration = Duration::from_secs(2);

/// Where and how to subscribe.
#[derive(Debug, Clone)]
pub struct SubscriberSettings {
    /// `ws://` or `wss://` URL of the analyzer's `/ws/subscriber/flow`.
    pub url: String,
    /// Sent as `X-Host-ID`; may be empty.
    pub host_id: String,
    /// `""` subscribes to namespace `flow`, anything else to `flow/<capture_id>`.
    pub capture_id: String,
    /// `""` sends no `Authorization` header.
    pub username: String,
    /// Basic-auth password.
    pub password: String,
    /// Reconnect after this long without flows or stats.
    pub silence_timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// TLS for `wss://` from the pipeline's `tls` section; `None`: the public roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Where the subscriber may connect.
    pub egress: EgressPolicy,
    /// Decoded flows it may have queued for the pipeline ([`MAX_QUEUED_FLOWS`]).
    pub queue_flows: usize,
    /// How long a message waits for room in that queue ([`BACKPRESSURE_WAIT`]).
    pub backpressure_wait: Duration,
    /// In `sluice serve`, the node's hold on the pipeline: no connection is made once it has
    /// lapsed (docs/service.md §9), so a node resuming from a pause never subscribes for a
    /// pipeline another node has taken over.
    pub fence: Option<Arc<crate::fence::Fence>>,
}

impl Default for SubscriberSettings {
    fn default() -> Self {
        SubscriberSettings {
            url: "ws://127.0.0.1:8082/ws/subscriber/flow".to_owned(),
            host_id: String::new(),
            capture_id: String::new(),
            username: String::new(),
            password: String::new(),
            silence_timeout: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            tls: None,
            egress: EgressPolicy::unrestricted(),
            queue_flows: MAX_QUEUED_FLOWS,
            backpressure_wait: BACKPRESSURE_WAIT,
            fence: None,
        }
    }
}

impl SubscriberSettings {
    /// The URL for logs and errors (credentials in it hidden).
    pub fn shown_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The flow namespace to subscribe to: `flow` or `flow/<capture_id>`.
    pub fn namespace(&self) -> String {
        if self.capture_id.is_empty() {
            "flow".to_owned()
        } else {
            format!("flow/{}", self.capture_id)
        }
    }
}

/// The flows of one `store` message that decoded, in message order.
#[derive(Debug)]
pub struct FlowBatch {
    /// Flows in array order (the same UUID may appear more than once).
    pub flows: Vec<Flow>,
    /// Their room in the subscriber's queue ([`MAX_QUEUED_FLOWS`]), given back when the
    /// batch is dropped: keep the batch until its flows are processed.
    _room: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl FlowBatch {
    /// Flows that take no room in a subscriber's queue (tests, benchmarks).
    pub fn new(flows: Vec<Flow>) -> Self {
        FlowBatch { flows, _room: None }
    }
}

/// Live counters of one subscriber, shared with whoever reports on it.
#[derive(Debug, Default)]
pub struct SubscriberStats {
    /// Whether a connection is currently up.
    pub connected: AtomicBool,
    /// Successful upgrades.
    pub connects: AtomicU64,
    /// Connections that ended, for any reason.
    pub disconnects: AtomicU64,
    /// Data messages received (any type, any namespace).
    pub messages: AtomicU64,
    /// Flows decoded and sent on.
    pub flows: AtomicU64,
    /// Flows dropped because they did not decode.
    pub malformed_flows: AtomicU64,
    /// Flows dropped because the pipeline fell behind (no room in its queue for
    /// [`SubscriberSettings::backpressure_wait`]).
    pub backpressure_flows: AtomicU64,
    /// Messages dropped because they were not a valid envelope or flow array.
    pub malformed_messages: AtomicU64,
    /// Messages with a `Type` other than `store` or `stats`.
    pub unknown_types: AtomicU64,
    /// The last connection or stream error, for humans.
    pub last_error: Mutex<Option<String>>,
}

impl SubscriberStats {
    /// The last error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_error(&self, error: &SubscriberError) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }
}

/// Why a connection attempt or a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum SubscriberError {
    /// The URL or a header value could not be used.
    #[error("invalid subscriber request for {url}: {reason}")]
    InvalidRequest {
        /// Analyzer URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// HTTP 401.
    #[error("wrong credentials (HTTP 401) for {url}")]
    Unauthorized {
        /// Analyzer URL.
        url: String,
    },
    /// HTTP 403.
    #[error("permission denied by the analyzer's RBAC (HTTP 403) on {url}")]
    Forbidden {
        /// Analyzer URL.
        url: String,
    },
    /// HTTP 409.
    #[error("host id `{host_id}` already in use on {url} (HTTP 409)")]
    HostIdInUse {
        /// Our `X-Host-ID`.
        host_id: String,
        /// Analyzer URL.
        url: String,
    },
    /// Any other HTTP answer instead of 101.
    #[error("analyzer answered HTTP {status} instead of upgrading on {url}")]
    HttpStatus {
        /// The status received.
        status: u16,
        /// Analyzer URL.
        url: String,
    },
    /// TCP, TLS or WebSocket failure while connecting.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// Analyzer URL.
        url: String,
        /// The transport error.
        source: tungstenite::Error,
    },
    /// The egress policy refuses the analyzer's address.
    #[error("not connecting to {url}: {source}")]
    Egress {
        /// Analyzer URL.
        url: String,
        /// Which address, and why.
        source: EgressError,
    },
    /// The connect or upgrade took too long.
    #[error("connecting to {url} timed out")]
    ConnectTimeout {
        /// Analyzer URL.
        url: String,
    },
    /// A Close frame right after the 101: bad `X-Client-Type` or `X-Client-Protocol`.
    #[error("analyzer rejected client headers (closed right after the upgrade) on {url}")]
    RejectedHeaders {
        /// Analyzer URL.
        url: String,
    },
    /// Nothing at all arrived for the silence timeout.
    #[error("no flows or stats from {url} for {timeout:?}, reconnecting")]
    Silence {
        /// Analyzer URL.
        url: String,
        /// The configured silence timeout.
        timeout: Duration,
    },
    /// The connection failed while streaming.
    #[error("connection to {url} lost: {source}")]
    Stream {
        /// Analyzer URL.
        url: String,
        /// The transport error.
        source: tungstenite::Error,
    },
    /// The analyzer closed the connection.
    #[error("analyzer closed the connection on {url}")]
    Closed {
        /// Analyzer URL.
        url: String,
    },
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a connection ended.
enum Ended {
    /// Cancelled or the consumer went away: stop for good.
    Stop,
    /// Reconnect; `delivered` tells whether data arrived, which resets the backoff.
    Reconnect {
        error: SubscriberError,
        delivered: bool,
    },
}

/// Subscribes until `shutdown` is cancelled (or `out` is closed), reconnecting as needed.
pub async fn run(
    settings: SubscriberSettings,
    out: mpsc::Sender<FlowBatch>,
    stats: Arc<SubscriberStats>,
    shutdown: CancellationToken,
) {
    // rustls needs a process-wide crypto provider for wss://; ignore "already installed".
    let _ = rustls::crypto::ring::default_provider().install_default();
    let span =
        tracing::info_span!("subscriber", url = %settings.shown_url(), host_id = %settings.host_id);
    supervise(settings, out, stats, shutdown)
        .instrument(span)
        .await;
}

async fn supervise(
    settings: SubscriberSettings,
    out: mpsc::Sender<FlowBatch>,
    stats: Arc<SubscriberStats>,
    shutdown: CancellationToken,
) {
    let mut backoff = settings.backoff_initial;
    let queue = Arc::new(tokio::sync::Semaphore::new(settings.queue_flows.max(1)));
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if let Some(fence) = &settings.fence
            && !fence.holds()
        {
            warn!(url = %settings.shown_url(), host_id = %settings.host_id, "Not subscribing: this node's hold on the pipeline lapsed.");
            return;
        }
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = connect(&settings) => result,
        };
        let ended = match connected {
            Ok(socket) => {
                stats.connected.store(true, Ordering::Relaxed);
                stats.connects.fetch_add(1, Ordering::Relaxed);
                info!(url = %settings.shown_url(), host_id = %settings.host_id, namespace = %settings.namespace(), "Subscribed to the analyzer.");
                let ended = stream(&settings, socket, &out, &queue, &stats, &shutdown).await;
                stats.connected.store(false, Ordering::Relaxed);
                stats.disconnects.fetch_add(1, Ordering::Relaxed);
                ended
            }
            Err(error) => Ended::Reconnect {
                error,
                delivered: false,
            },
        };
        match ended {
            Ended::Stop => return,
            Ended::Reconnect { error, delivered } => {
                if delivered {
                    backoff = settings.backoff_initial;
                }
                warn!(url = %settings.shown_url(), host_id = %settings.host_id, error = %error, "Subscriber disconnected.");
                stats.set_error(&error);
            }
        }
        let delay = jitter(backoff);
        debug!(url = %settings.shown_url(), ?delay, "Reconnecting after backoff.");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        backoff = (backoff * 2).min(settings.backoff_max.max(settings.backoff_initial));
    }
}

/// A delay between half and all of `backoff`.
fn jitter(backoff: Duration) -> Duration {
    let factor: f64 = rand::rng().random_range(0.5..=1.0);
    backoff.mul_f64(factor)
}

/// Builds the upgrade request with the headers of §8 "Rust client".
fn request(
    settings: &SubscriberSettings,
) -> Result<tungstenite::handshake::client::Request, SubscriberError> {
    let invalid = |reason: String| SubscriberError::InvalidRequest {
        url: settings.shown_url(),
        reason,
    };
    let mut request = settings
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| invalid(e.to_string()))?;
    let value =
        |v: &str| HeaderValue::from_str(v).map_err(|_| invalid(format!("bad header value `{v}`")));
    let headers = request.headers_mut();
    headers.insert("X-Host-ID", value(&settings.host_id)?);
    headers.insert("X-Client-Type", HeaderValue::from_static("sluice"));
    headers.insert("X-Client-Protocol", HeaderValue::from_static("json"));
    headers.append("X-Websocket-Namespace", value(&settings.namespace())?);
    headers.append("X-Websocket-Namespace", HeaderValue::from_static("stats"));
    if !settings.username.is_empty() {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", settings.username, settings.password));
        let mut auth = value(&format!("Basic {token}"))?;
        auth.set_sensitive(true);
        headers.insert("Authorization", auth);
    }
    Ok(request)
}

/// A TCP connection to the first reachable address the analyzer's host resolves to, among
/// those the egress policy allows.
async fn open_tcp(settings: &SubscriberSettings) -> Result<TcpStream, SubscriberError> {
    let url = settings.shown_url();
    let parsed = url::Url::parse(&settings.url).map_err(|e| SubscriberError::InvalidRequest {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    let host = match parsed.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(h) => h.to_string(),
        None => {
            return Err(SubscriberError::InvalidRequest {
                url,
                reason: "no host".into(),
            });
        }
    };
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs = settings
        .egress
        .resolve(&host, port)
        .await
        .map_err(|source| SubscriberError::Egress {
            url: url.clone(),
            source,
        })?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(SubscriberError::Connect {
        url,
        source: tungstenite::Error::Io(last.unwrap_or_else(|| std::io::Error::other("no address"))),
    })
}

async fn connect(settings: &SubscriberSettings) -> Result<Socket, SubscriberError> {
    let url = settings.shown_url();
    let request = request(settings)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE));
    let connecting = async {
        let stream = open_tcp(settings).await.map_err(Err)?;
        let connector = settings.tls.clone().map(Connector::Rustls);
        tokio_tungstenite::client_async_tls_with_config(request, stream, Some(config), connector)
            .await
            .map_err(Ok)
    };
    let (socket, response) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => return Err(SubscriberError::ConnectTimeout { url }),
        Ok(Err(Err(error))) => return Err(error),
        Ok(Ok(done)) => done,
        Ok(Err(Ok(tungstenite::Error::Http(response)))) => {
            return Err(match response.status() {
                StatusCode::UNAUTHORIZED => SubscriberError::Unauthorized { url },
                StatusCode::FORBIDDEN => SubscriberError::Forbidden { url },
                StatusCode::CONFLICT => SubscriberError::HostIdInUse {
                    host_id: settings.host_id.clone(),
                    url,
                },
                status => SubscriberError::HttpStatus {
                    status: status.as_u16(),
                    url,
                },
            });
        }
        Ok(Err(Ok(source))) => return Err(SubscriberError::Connect { url, source }),
    };
    for header in ["X-Host-ID", "X-Service-Type"] {
        if !response.headers().contains_key(header) {
            warn!(url = %url, header, "Analyzer upgrade response lacks a header a Skydive analyzer sends.");
        }
    }
    Ok(socket)
}

/// Reads one connection until it ends.
async fn stream(
    settings: &SubscriberSettings,
    mut socket: Socket,
    out: &mpsc::Sender<FlowBatch>,
    queue: &Arc<tokio::sync::Semaphore>,
    stats: &SubscriberStats,
    shutdown: &CancellationToken,
) -> Ended {
    let url = &settings.shown_url();
    let accepted = [settings.namespace(), "stats".to_owned()];
    let silence = tokio::time::sleep(settings.silence_timeout);
    tokio::pin!(silence);
    let mut delivered = false;
    let mut first_frame = true;
    let mut malformed_log = LogThrottle::default();
    let mut backpressure_log = LogThrottle::default();
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                return Ended::Stop;
            }
            _ = &mut silence => {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                return Ended::Reconnect {
                    error: SubscriberError::Silence { url: url.clone(), timeout: settings.silence_timeout },
                    delivered,
                };
            }
            next = socket.next() => next,
        };
        let was_first = std::mem::replace(&mut first_frame, false);
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(source)) => {
                return Ended::Reconnect {
                    error: SubscriberError::Stream {
                        url: url.clone(),
                        source,
                    },
                    delivered,
                };
            }
            None => {
                return Ended::Reconnect {
                    error: SubscriberError::Closed { url: url.clone() },
                    delivered,
                };
            }
        };
        let text = match &message {
            Message::Text(text) => text.as_str(),
            Message::Binary(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => {
                    stats.messages.fetch_add(1, Ordering::Relaxed);
                    stats.malformed_messages.fetch_add(1, Ordering::Relaxed);
                    warn!(%url, "Dropped a binary message that is not UTF-8 JSON.");
                    continue;
                }
            },
            Message::Close(frame) => {
                let error = if was_first {
                    SubscriberError::RejectedHeaders { url: url.clone() }
                } else {
                    debug!(%url, ?frame, "Analyzer sent a Close frame.");
                    SubscriberError::Closed { url: url.clone() }
                };
                return Ended::Reconnect { error, delivered };
            }
            // tungstenite queues the Pong; the next poll of `socket` flushes it.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        stats.messages.fetch_add(1, Ordering::Relaxed);
        match decode(text, &accepted) {
            Decoded::Store {
                namespace,
                flows,
                malformed,
            } => {
                delivered = true;
                silence
                    .as_mut()
                    .reset(tokio::time::Instant::now() + settings.silence_timeout);
                if let Some(reason) = malformed.first()
                    && let Some(not_logged) = malformed_log.allow()
                {
                    let reason = crate::log_throttle::truncate(reason.to_string(), 512);
                    warn!(%url, %namespace, %reason, flows = malformed.len(), not_logged, "Dropped malformed flows.");
                }
                stats
                    .malformed_flows
                    .fetch_add(malformed.len() as u64, Ordering::Relaxed);
                if flows.is_empty() {
                    continue;
                }
                let count = flows.len() as u64;
                // A message larger than the whole queue waits for all of it.
                let room = flows.len().min(settings.queue_flows.max(1)) as u32;
                let queued = tokio::time::timeout(settings.backpressure_wait, async {
                    // The semaphore is never closed.
                    let room = queue.clone().acquire_many_owned(room).await.ok();
                    out.send(FlowBatch { flows, _room: room }).await
                });
                let sent = tokio::select! {
                    _ = shutdown.cancelled() => return Ended::Stop,
                    sent = queued => sent,
                };
                match sent {
                    Ok(Ok(())) => {
                        stats.flows.fetch_add(count, Ordering::Relaxed);
                    }
                    Ok(Err(_closed)) => {
                        debug!(%url, "Flow consumer is gone; stopping the subscriber.");
                        return Ended::Stop;
                    }
                    Err(_elapsed) => {
                        stats.backpressure_flows.fetch_add(count, Ordering::Relaxed);
                        if let Some(not_logged) = backpressure_log.allow() {
                            warn!(%url, flows = count, not_logged, wait = ?settings.backpressure_wait, "Dropped a message: the pipeline is behind.");
                        }
                    }
                }
            }
            Decoded::Stats => {
                delivered = true;
                silence
                    .as_mut()
                    .reset(tokio::time::Instant::now() + settings.silence_timeout);
            }
            Decoded::Foreign { namespace } => {
                debug!(%url, %namespace, "Ignored a message for a namespace we did not ask for.");
            }
            Decoded::Unknown { namespace, kind } => {
                stats.unknown_types.fetch_add(1, Ordering::Relaxed);
                debug!(%url, %namespace, %kind, "Ignored a message of unknown type.");
            }
            Decoded::Malformed { reason } => {
                stats.malformed_messages.fetch_add(1, Ordering::Relaxed);
                warn!(%url, %reason, "Dropped a malformed message.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test certificate or key of `tests/vectors/tls` (a CA, a server certificate for
    /// localhost and a client certificate it signed).
    fn pem(name: &str) -> String {
        crate::test_vectors::text(&format!("tls/{name}"))
    }

    /// An analyzer on `wss://` that trusts only clients with a certificate of the test CA and
    /// sends one `store` message of one flow.
    async fn tls_analyzer() -> std::net::SocketAddr {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pem("ca.pem").as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(pem("server.pem").as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pem("server.key").as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let flow = pem("../skydive/flow-tcp4-1-first-seen.json");
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, flow) = (acceptor.clone(), flow.clone());
                tokio::spawn(async move {
                    // A client without a certificate of the CA fails here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut ws = tokio_tungstenite::accept_async(tls).await.unwrap();
                    use futures_util::SinkExt as _;
                    let message =
                        format!(r#"{{"Namespace":"flow","Type":"store","Obj":[{flow}]}}"#);
                    ws.send(Message::text(message)).await.unwrap();
                    let _ = ws.next().await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn wss_uses_the_pipelines_ca_and_client_certificate() {
        let addr = tls_analyzer().await;
        let section = |with_client: bool| crate::config::TlsSection {
            ca_cert: pem("ca.pem"),
            client_cert: if with_client {
                pem("client.pem")
            } else {
                String::new()
            },
            client_key: if with_client {
                pem("client.key")
            } else {
                String::new()
            },
        };
        let settings = |tls| SubscriberSettings {
            url: format!("wss://localhost:{}/ws/subscriber/flow", addr.port()),
            tls: crate::tls::client_config(&tls).unwrap(),
            backoff_initial: Duration::from_millis(50),
            ..SubscriberSettings::default()
        };
        // With the CA and the client certificate: subscribed, and the flow arrives.
        let (tx, mut rx) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            settings(section(true)),
            tx,
            Arc::new(SubscriberStats::default()),
            stop.clone(),
        ));
        let batch = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(batch.flows.len(), 1);
        stop.cancel();
        task.await.unwrap();
        // Without the client certificate the analyzer refuses the handshake.
        let error = connect(&settings(section(false)))
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(error, SubscriberError::Connect { .. }), "{error}");
        // The public roots don't know the test CA.
        let public = SubscriberSettings {
            url: format!("wss://localhost:{}/ws/subscriber/flow", addr.port()),
            ..SubscriberSettings::default()
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let error = connect(&public).await.map(|_| ()).unwrap_err();
        assert!(error.to_string().contains("certificate"), "{error}");
    }

    #[tokio::test]
    async fn a_slow_pipeline_holds_a_bounded_queue_and_drops_are_counted() {
        use futures_util::SinkExt as _;
        const MESSAGES: usize = 40;
        const FLOWS: usize = 100;
        const QUEUE: usize = 500;
        // A fast analyzer: every message at once, then it waits for the close.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let flow = pem("../skydive/flow-tcp4-1-first-seen.json");
        let message = format!(
            r#"{{"Namespace":"flow","Type":"store","Obj":[{}]}}"#,
            vec![flow.trim(); FLOWS].join(",")
        );
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            for _ in 0..MESSAGES {
                ws.send(Message::text(message.clone())).await.unwrap();
            }
            while let Some(Ok(_)) = ws.next().await {}
        });
        let settings = SubscriberSettings {
            url: format!("ws://{addr}/ws/subscriber/flow"),
            queue_flows: QUEUE,
            backpressure_wait: Duration::from_millis(100),
            ..SubscriberSettings::default()
        };
        let stats = Arc::new(SubscriberStats::default());
        let (tx, mut rx) = mpsc::channel(crate::runner::CHANNEL_MESSAGES);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(settings, tx, stats.clone(), stop.clone()));
        // A slow pipeline: each message takes 200 ms, and its room is given back after.
        let mut processed = 0;
        let handled = |stats: &SubscriberStats| {
            stats.flows.load(Ordering::Relaxed) + stats.backpressure_flows.load(Ordering::Relaxed)
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while handled(&stats) < (MESSAGES * FLOWS) as u64
            || processed < stats.flows.load(Ordering::Relaxed)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "every message handled in time"
            );
            let Ok(batch) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
            else {
                continue;
            };
            let batch = batch.unwrap();
            // Queued now: what was sent on and is not processed yet, this batch included.
            let queued = stats.flows.load(Ordering::Relaxed) - processed;
            assert!(
                queued <= QUEUE as u64,
                "{queued} flows queued, more than {QUEUE}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            processed += batch.flows.len() as u64;
        }
        let (delivered, dropped) = (
            stats.flows.load(Ordering::Relaxed),
            stats.backpressure_flows.load(Ordering::Relaxed),
        );
        assert_eq!(delivered + dropped, (MESSAGES * FLOWS) as u64);
        assert_eq!(processed, delivered);
        assert!(
            dropped > 0 && delivered > QUEUE as u64,
            "{delivered} delivered, {dropped} dropped"
        );
        assert_eq!(dropped % FLOWS as u64, 0, "whole messages are dropped");
        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn namespace_follows_capture_id() {
        let mut settings = SubscriberSettings::default();
        assert_eq!(settings.namespace(), "flow");
        settings.capture_id = "abc".into();
        assert_eq!(settings.namespace(), "flow/abc");
    }

    #[test]
    fn request_carries_the_subscriber_headers() {
        let settings = SubscriberSettings {
            url: "ws://127.0.0.1:1/ws/subscriber/flow".into(),
            host_id: "h1".into(),
            capture_id: "cap".into(),
            username: "admin".into(),
            password: "secret".into(),
            ..SubscriberSettings::default()
        };
        let request = request(&settings).unwrap();
        let h = request.headers();
        assert_eq!(h["X-Host-ID"], "h1");
        assert_eq!(h["X-Client-Type"], "sluice");
        assert_eq!(h["X-Client-Protocol"], "json");
        let namespaces: Vec<_> = h.get_all("X-Websocket-Namespace").iter().collect();
        assert_eq!(namespaces, ["flow/cap", "stats"]);
        assert_eq!(h["Authorization"], "Basic YWRtaW46c2VjcmV0");

        let anonymous = SubscriberSettings {
            url: settings.url.clone(),
            ..SubscriberSettings::default()
        };
        let request = super::request(&anonymous).unwrap();
        assert!(request.headers().get("Authorization").is_none());
        assert_eq!(request.headers()["X-Host-ID"], "");
    }

    #[test]
    fn bad_url_is_an_invalid_request() {
        let settings = SubscriberSettings {
            url: "not a url".into(),
            ..SubscriberSettings::default()
        };
        assert!(matches!(
            request(&settings),
            Err(SubscriberError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn jitter_stays_within_half_and_full_backoff() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(2));
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
        }
    }
}
