//! `GET /ws/subscriber/flow` (docs/skydive-protocol.md §1.2–§1.3, §2.5).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use tracing::{debug, info};

use super::SimState;
use super::hub::{Filter, Reservation};

/// Each write gets this long, as in Skydive.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn refuse(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONNECTION, "close")], body).into_response()
}

/// A header value, else the lowercase query parameter of the same name.
fn param(headers: &HeaderMap, query: &[(String, String)], name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            let lower = name.to_ascii_lowercase();
            query
                .iter()
                .find(|(k, _)| *k == lower)
                .map(|(_, v)| v.clone())
        })
}

pub(crate) async fn subscriber_flow(
    State(sim): State<Arc<SimState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !sim.authorized(&headers) {
        return refuse(StatusCode::UNAUTHORIZED, "Wrong credentials");
    }
    let query: Vec<(String, String)> = Query::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let host_id = param(&headers, &query, "X-Host-ID")
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| peer.to_string());
    let Some(reservation) = sim.hub.reserve(host_id.clone()) else {
        info!(%host_id, %peer, "Refused a subscriber whose host id is in use.");
        sim.subscriptions.record(&host_id, peer, 409);
        return refuse(StatusCode::CONFLICT, "host id already connected");
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(_) => return refuse(StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade required"),
    };
    let client_ok = param(&headers, &query, "X-Client-Type").is_some_and(|t| !t.is_empty())
        && matches!(
            param(&headers, &query, "X-Client-Protocol").as_deref(),
            None | Some("") | Some("json")
        );
    let registered: Vec<String> = headers
        .get_all("X-Websocket-Namespace")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let accepted: Vec<String> = registered
        .iter()
        .cloned()
        .chain(
            query
                .iter()
                .filter(|(k, _)| k == "x-websocket-namespace")
                .map(|(_, v)| v.clone()),
        )
        .collect();
    sim.subscriptions.record(&host_id, peer, 101);
    let conn = Connection {
        sim: sim.clone(),
        reservation,
        host_id,
        client_ok,
        registered,
        filter: Filter::new(accepted),
    };
    let mut response = upgrade
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| conn.run(socket));
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&sim.args.analyzer_host_id) {
        h.insert("X-Host-ID", v);
    }
    h.insert("X-Service-Type", HeaderValue::from_static("analyzer"));
    response
}

struct Connection {
    sim: Arc<SimState>,
    reservation: Reservation,
    host_id: String,
    client_ok: bool,
    registered: Vec<String>,
    filter: Filter,
}

impl Connection {
    async fn run(self, socket: WebSocket) {
        let Connection {
            sim,
            reservation,
            host_id,
            client_ok,
            registered,
            filter,
        } = self;
        let _reservation = reservation;
        let (mut tx, mut rx) = socket.split();
        if !client_ok {
            debug!(%host_id, "Closing a subscriber with bad X-Client-Type or X-Client-Protocol.");
            let close = Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "".into(),
            }));
            let _ = tokio::time::timeout(WRITE_TIMEOUT, tx.send(close)).await;
            return;
        }
        let (_attached, mut queue) = sim.hub.attach(registered, filter);
        info!(%host_id, "Subscriber connected.");
        let ping_every = Duration::from_secs_f64(sim.args.ping_secs);
        let read_deadline = ping_every + Duration::from_secs_f64(sim.args.pong_timeout_secs);
        // A Ping right after the upgrade, before anything queued for this subscriber.
        if !send(&mut tx, Message::Ping(Default::default())).await {
            info!(%host_id, "Subscriber disconnected.");
            return;
        }
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let deadline = tokio::time::sleep(read_deadline);
        tokio::pin!(deadline);
        let shutdown = sim.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = &mut deadline => {
                    info!(%host_id, "No Pong in time; dropping the subscriber.");
                    break;
                }
                _ = ping.tick() => {
                    if !send(&mut tx, Message::Ping(Default::default())).await {
                        break;
                    }
                }
                outgoing = queue.recv() => {
                    let Some(outgoing) = outgoing else { break };
                    if !send(&mut tx, Message::Text(outgoing.text.clone())).await {
                        break;
                    }
                    sim.hub.written(&outgoing);
                }
                incoming = rx.next() => match incoming {
                    Some(Ok(Message::Pong(_))) => {
                        deadline.as_mut().reset(tokio::time::Instant::now() + read_deadline);
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    // Data from the client is read and ignored; Pings are answered by the library.
                    Some(Ok(_)) => {}
                },
            }
        }
        // Dropping the socket closes TCP without a Close frame, as the analyzer usually does.
        info!(%host_id, "Subscriber disconnected.");
    }
}

/// Writes one frame; false when it failed or took longer than [`WRITE_TIMEOUT`].
async fn send(tx: &mut SplitSink<WebSocket, Message>, message: Message) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, tx.send(message)).await,
        Ok(Ok(()))
    )
}
