//! `write: {type: s3}`: one PutObject per object to an S3-compatible store (docs/stages.md §13.1).
//!
//! Path-style addressing (`<endpoint>/<bucket>/<key>`), the object's real Content-Type and
//! Content-Encoding, and its user metadata as `x-amz-meta-*`. Credentials are HMAC keys signed
//! with SigV4, or an IBM IAM api key: then every request carries `Authorization: Bearer <token>`
//! (see [`super::ibm_iam`]). The SDK's own retries are off: the spool ([`super::spool`]) retries
//! each object until it is stored, so one failed attempt is reported at once with its key,
//! bucket and endpoint.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, RuntimeComponents,
};
use aws_sdk_s3::error::{BoxError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use super::ibm_iam::IamTokens;
use super::{Object, SinkError};
use crate::config::S3Options;
use crate::egress::EgressPolicy;

/// Region used when `pipeline.write.s3.region` is empty (SigV4 needs one).
pub const DEFAULT_REGION: &str = "us-east-1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes objects to an S3-compatible store.
#[derive(Clone)]
pub struct S3Sink {
    client: aws_sdk_s3::Client,
    /// For messages: the configured endpoint, or AWS's for the region.
    endpoint: Arc<str>,
    iam: Option<Arc<IamTokens>>,
    /// The endpoint's address when it is written as one (the resolver never sees it).
    literal: Option<std::net::SocketAddr>,
    egress: EgressPolicy,
}

impl std::fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Sink")
            .field("endpoint", &self.endpoint)
            .field("iam", &self.iam.is_some())
            .finish_non_exhaustive()
    }
}

impl S3Sink {
    /// Builds the client from validated options. Nothing is contacted yet.
    pub fn from_options(opts: &S3Options, egress: &EgressPolicy) -> Self {
        let region = if opts.region.is_empty() {
            DEFAULT_REGION
        } else {
            opts.region.as_str()
        };
        let destination = crate::config::destination(&opts.endpoint).ok();
        let port = destination.as_ref().map_or(443, |d| d.port());
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_with_resolver(egress.resolver(port));
        let iam = (!opts.api_key.is_empty()).then(|| {
            Arc::new(IamTokens::new(
                opts.api_key.clone(),
                opts.iam_endpoint.clone(),
                egress,
            ))
        });
        // With IAM the SigV4 signature is replaced by the bearer token before sending, so
        // these static keys never leave the process.
        let credentials = match &iam {
            Some(_) => Credentials::new("ibm-iam", "ibm-iam", None, None, "sluice-ibm-iam"),
            None => Credentials::new(
                opts.access_key.clone(),
                opts.secret_key.clone(),
                None,
                None,
                "sluice-config",
            ),
        };
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(credentials)
            .force_path_style(true)
            .http_client(http)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            )
            // S3-compatible stores (IBM COS, older MinIO) don't all know the flexible
            // checksums newer SDKs add by default.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        let endpoint = if opts.endpoint.is_empty() {
            format!("AWS S3 ({region})")
        } else {
            config = config.endpoint_url(opts.endpoint.trim_end_matches('/'));
            opts.endpoint.clone()
        };
        S3Sink {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            endpoint: endpoint.into(),
            iam,
            literal: destination.and_then(|d| d.literal_addr()),
            egress: egress.clone(),
        }
    }

    /// The endpoint, as shown in messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One PutObject. With IBM IAM, a 401/403 answer invalidates the token and the request is
    /// sent once more with a fresh one.
    pub async fn write(&self, object: &Object) -> Result<(), SinkError> {
        if let Some(addr) = self.literal {
            self.egress
                .check(addr)
                .map_err(|e| self.error(object, None, e.to_string()))?;
        }
        let Some(iam) = &self.iam else {
            return self.put(object, None).await;
        };
        let token = iam.token().await.map_err(|e| self.error(object, None, e))?;
        match self.put(object, Some(&token)).await {
            Err(SinkError::Store {
                status: Some(401 | 403),
                message,
                ..
            }) => {
                tracing::info!(bucket = %object.bucket, key = %object.key, endpoint = %self.endpoint, %message, "store refused the IAM token; fetching a new one");
                iam.invalidate(&token).await;
                let token = iam.token().await.map_err(|e| self.error(object, None, e))?;
                self.put(object, Some(&token)).await
            }
            other => other,
        }
    }

    async fn put(&self, object: &Object, bearer: Option<&str>) -> Result<(), SinkError> {
        let mut request = self
            .client
            .put_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .body(ByteStream::from(object.body.clone()))
            .content_length(object.body.len() as i64)
            .content_type(object.content_type);
        if let Some(encoding) = object.content_encoding {
            request = request.content_encoding(encoding);
        }
        for (name, value) in &object.metadata {
            request = request.metadata(*name, value);
        }
        let result = match bearer {
            Some(token) => {
                request
                    .customize()
                    .interceptor(BearerAuth(format!("Bearer {token}")))
                    .send()
                    .await
            }
            None => request.send().await,
        };
        match result {
            Ok(_) => {
                tracing::debug!(bucket = %object.bucket, key = %object.key, endpoint = %self.endpoint, bytes = object.body.len(), "Wrote {}", object.key);
                Ok(())
            }
            Err(e) => {
                let (status, message) = describe(&e);
                Err(self.error(object, status, message))
            }
        }
    }

    fn error(&self, object: &Object, status: Option<u16>, message: String) -> SinkError {
        SinkError::Store {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            endpoint: self.endpoint.to_string(),
            status,
            message,
        }
    }
}

/// The HTTP status (when the store answered) and a message saying what to fix.
fn describe<E>(e: &SdkError<E>) -> (Option<u16>, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let err = service.err();
            let code = err.code().unwrap_or("");
            let detail = err.message().unwrap_or("");
            let hint = match code {
                "NoSuchBucket" => {
                    " (the bucket does not exist: create it, or fix store.buffered.dirname)"
                }
                "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
                    " (wrong credentials: check write.s3.access_key and write.s3.secret_key)"
                }
                "AccessDenied" | "InvalidToken" | "ExpiredToken" => {
                    " (the credentials may not write to this bucket)"
                }
                _ => "",
            };
            let code = if code.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("{code} (HTTP {status})")
            };
            let sep = if detail.is_empty() { "" } else { ": " };
            (Some(status), format!("{code}{sep}{detail}{hint}"))
        }
        SdkError::DispatchFailure(f) => {
            let what = if f.is_timeout() {
                "timed out connecting to the endpoint"
            } else if f.is_io() {
                "endpoint unreachable"
            } else {
                "request not sent"
            };
            (None, format!("{what}: {}", DisplayErrorContext(e)))
        }
        SdkError::TimeoutError(_) => (None, "request timed out".into()),
        _ => (None, DisplayErrorContext(e).to_string()),
    }
}

/// Replaces the SigV4 `Authorization` header with an IBM IAM bearer token just before the
/// request is sent (after signing, so the signer never needs to know about IAM).
#[derive(Debug)]
struct BearerAuth(String);

impl Intercept for BearerAuth {
    fn name(&self) -> &'static str {
        "IbmIamBearerAuth"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let headers = context.request_mut().headers_mut();
        headers.remove("x-amz-security-token");
        headers.insert("authorization", self.0.clone());
        Ok(())
    }
}
