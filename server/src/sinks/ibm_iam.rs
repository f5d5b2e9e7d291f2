//! IBM Cloud IAM bearer tokens for IBM COS (`write.s3.api_key`, docs/service.md §4).
//!
//! The api key is exchanged at `iam_endpoint` with a form POST
//! (`grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=<key>`); the JSON answer carries
//! `access_token`, `expires_in` (seconds) and `expiration` (epoch seconds). A token is reused
//! until a fifth of its lifetime (at most 5 minutes) is left, then replaced; the S3 writer also
//! drops it when the store answers 401/403.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::egress::EgressPolicy;

/// Where api keys are exchanged when `write.s3.iam_endpoint` is empty.
pub const DEFAULT_IAM_ENDPOINT: &str = "https://iam.cloud.ibm.com/identity/token";
const GRANT_TYPE: &str = "urn:ibm:params:oauth:grant-type:apikey";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Refresh ahead of expiry by this much at most.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The longest token lifetime believed.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// The shortest token lifetime used.
const MIN_LIFETIME: Duration = Duration::from_secs(1);
/// Largest IAM answer read (a token answer is a few kilobytes).
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// A cached IAM token source.
pub struct IamTokens {
    http: reqwest::Client,
    endpoint: String,
    api_key: String,
    cached: Mutex<Option<Token>>,
    /// The endpoint's address when it is written as one (the resolver never sees it).
    literal: Option<std::net::SocketAddr>,
    egress: EgressPolicy,
}

impl std::fmt::Debug for IamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamTokens")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Token {
    value: String,
    refresh_at: Instant,
}

/// The token endpoint's answer (other fields are ignored).
#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    expiration: Option<i64>,
}

impl IamTokens {
    /// A token source for `api_key`; an empty `endpoint` means [`DEFAULT_IAM_ENDPOINT`].
    pub fn new(api_key: String, endpoint: String, egress: &EgressPolicy) -> Self {
        let endpoint = if endpoint.is_empty() {
            DEFAULT_IAM_ENDPOINT.to_string()
        } else {
            endpoint
        };
        let destination = crate::config::destination(&endpoint).ok();
        let port = destination.as_ref().map_or(443, |d| d.port());
        let http = crate::egress::http_client(egress, port)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        IamTokens {
            http,
            endpoint,
            api_key,
            cached: Mutex::new(None),
            literal: destination.and_then(|d| d.literal_addr()),
            egress: egress.clone(),
        }
    }

    /// The token endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A valid token: the cached one, or a new one when it is close to expiry.
    pub async fn token(&self) -> Result<String, String> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(token.value.clone());
        }
        let token = self.fetch().await?;
        *cached = Some(token.clone());
        Ok(token.value)
    }

    /// Forgets `value` if it is still the cached token (the store refused it).
    pub async fn invalidate(&self, value: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == value) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<Token, String> {
        let failed = |what: String| format!("IBM IAM token from {}: {what}", self.endpoint);
        if let Some(addr) = self.literal {
            self.egress.check(addr).map_err(|e| failed(e.to_string()))?;
        }
        let response = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[
                ("grant_type", GRANT_TYPE),
                ("apikey", self.api_key.as_str()),
            ])
            .send()
            .await
            .map_err(|e| failed(format!("request failed: {}", error_chain(&e))))?;
        let status = response.status();
        let body = crate::egress::read_body(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| failed(format!("reading the answer: {}", error_chain(&e))))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            let hint = if matches!(status.as_u16(), 400 | 401 | 403) {
                " (check write.s3.api_key)"
            } else {
                ""
            };
            return Err(failed(format!("HTTP {status}: {text}{hint}")));
        }
        let answer: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| failed(format!("unexpected answer: {e}")))?;
        let lifetime = match (answer.expires_in, answer.expiration) {
            (Some(secs), _) => Duration::from_secs(secs),
            (None, Some(epoch)) => {
                Duration::from_secs((epoch - chrono::Utc::now().timestamp()).max(0) as u64)
            }
            (None, None) => MAX_LIFETIME,
        }
        // IAM tokens live an hour: a longer lifetime is not believed (nor can an endless one
        // overflow the clock), and a zero one would have every upload fetch a token.
        .clamp(MIN_LIFETIME, MAX_LIFETIME);
        let margin = (lifetime / 5).min(MAX_REFRESH_MARGIN);
        tracing::info!(endpoint = %self.endpoint, expires_in_s = lifetime.as_secs(), "got an IBM IAM token");
        Ok(Token {
            value: answer.access_token,
            refresh_at: Instant::now() + lifetime - margin,
        })
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// An IAM token endpoint issuing `tok-<n>` for `apikey=good`, valid `expires_in` seconds.
    async fn iam(expires_in: u64) -> (String, Arc<AtomicUsize>) {
        let issued = Arc::new(AtomicUsize::new(0));
        let count = issued.clone();
        let app = axum::Router::new().route(
            "/identity/token",
            axum::routing::post(move |body: String| {
                let count = count.clone();
                async move {
                    let grant = body.contains("grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey");
                    if !grant || !body.contains("apikey=good") {
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            r#"{"errorMessage":"Provided API key could not be found."}"#.to_string(),
                        );
                    }
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    (
                        axum::http::StatusCode::OK,
                        format!(
                            r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":{expires_in},"expiration":0}}"#
                        ),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/identity/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, issued)
    }

    #[tokio::test]
    async fn token_is_cached_refreshed_before_expiry_and_replaced_when_refused() {
        let (url, issued) = iam(1).await;
        let tokens = IamTokens::new("good".into(), url, &EgressPolicy::unrestricted());
        assert_eq!(tokens.token().await.unwrap(), "tok-1");
        assert_eq!(tokens.token().await.unwrap(), "tok-1");
        assert_eq!(issued.load(Ordering::SeqCst), 1, "reused");
        // 1 s tokens are refreshed when a fifth of their life is left (after 0.8 s).
        tokio::time::sleep(Duration::from_millis(850)).await;
        assert_eq!(tokens.token().await.unwrap(), "tok-2");
        tokens.invalidate("tok-1").await;
        assert_eq!(tokens.token().await.unwrap(), "tok-2", "a stale refusal");
        tokens.invalidate("tok-2").await;
        assert_eq!(tokens.token().await.unwrap(), "tok-3");
    }

    #[tokio::test]
    async fn an_endless_lifetime_is_clamped_to_an_hour() {
        let (url, issued) = iam(u64::MAX).await;
        let tokens = IamTokens::new("good".into(), url, &EgressPolicy::unrestricted());
        assert_eq!(tokens.token().await.unwrap(), "tok-1");
        let refresh_at = tokens.cached.lock().await.as_ref().unwrap().refresh_at;
        assert!(refresh_at <= Instant::now() + MAX_LIFETIME);
        assert_eq!(issued.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn redirects_are_not_followed_and_denied_endpoints_not_contacted() {
        let app = axum::Router::new().route(
            "/identity/token",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [(
                        axum::http::header::LOCATION,
                        "http://169.254.169.254/latest",
                    )],
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}/identity/token");
        let err = IamTokens::new("good".into(), url.clone(), &EgressPolicy::unrestricted())
            .token()
            .await
            .unwrap_err();
        assert!(err.contains("HTTP 307"), "{err}");
        let deny_loopback = EgressPolicy::new(
            &[],
            &["127.0.0.0/8".parse().unwrap()],
            crate::egress::Action::Allow,
            vec![],
        );
        let err = IamTokens::new("good".into(), url, &deny_loopback)
            .token()
            .await
            .unwrap_err();
        assert!(err.contains("not an allowed destination"), "{err}");
    }

    #[tokio::test]
    async fn a_refused_key_is_a_clear_error() {
        let (url, _) = iam(3600).await;
        let err = IamTokens::new(
            "wrong-key-123".into(),
            url.clone(),
            &EgressPolicy::unrestricted(),
        )
        .token()
        .await
        .unwrap_err();
        assert!(
            err.starts_with(&format!("IBM IAM token from {url}: HTTP 400")),
            "{err}"
        );
        assert!(err.contains("check write.s3.api_key"), "{err}");
        assert!(
            !err.contains("wrong-key-123"),
            "the key is not logged: {err}"
        );
    }
}
