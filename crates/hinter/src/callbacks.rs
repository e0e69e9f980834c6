//! Callback deliveries (`docs/callbacks.md`): the handler of `hinter.callback` jobs, run by
//! every `hinter serve`.
//!
//! A job enqueued with `callback_url` leaves, when it finishes, a delivery job written in the
//! outcome's transaction (`hinter_core::followup`). This handler posts that job's `outcome`
//! to the URL, signed:
//!
//! ```text
//! POST <callback_url>
//! Content-Type: application/json
//! User-Agent: hinter/<version>
//! Hinter-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//! Hinter-Delivery: <id of the delivery job>
//! Hinter-Attempt: <attempt of the delivery, from 1>
//! Hinter-Event: job.<state>
//! ```
//!
//! A 2xx answer delivers it (the job's result is `{"status": <code>}`); anything else —
//! another status (redirects are never followed), no connection, a timeout — fails the
//! attempt with what happened, and the job machinery retries it with backoff (20 attempts,
//! about 8 hours). An address the policy refuses (`hinter_core::callback_policy`) fails it
//! for good.
//!
//! The policy is enforced where the connection is made: host names go through
//! [`GuardedResolver`], which refuses the whole URL when any address the name resolves to is
//! refused (a name answering with a public and a private address is a rebinding trick or a
//! mistake, and either way which one a connection would use is not ours to choose); literal
//! IP hosts, which no resolver sees, are checked before the request. Redirects are not
//! followed and no proxy from the environment is used, so the address checked is the address
//! reached.

use hinter_core::callback_policy::{AddressPolicy, IpNet, Refusal};
use hinter_core::followup::{
    CALLBACK_JOB, CALLBACK_MAX_ATTEMPTS, CALLBACK_QUEUE, CALLBACK_TIMEOUT,
};
use hinter_core::JobDefinition;
use hinter_engine::{HandlerContext, JobError, Registry};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for a connection to the receiver.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one attempt may take, answer included: inside the delivery job's own timeout
/// ([`CALLBACK_TIMEOUT`], 30 s), so the attempt's error says what timed out.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(28);
/// Bytes of a failed answer's body kept in the attempt's error.
const BODY_EXCERPT: usize = 200;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Hinter-Signature";

/// Callbacks of `hinter serve`: the secret they are signed with and the networks they may
/// reach besides public ones.
#[derive(Clone, clap::Args)]
pub struct CallbackArgs {
    /// Secret that callbacks (an enqueue's callback_url) are signed with: the
    /// Hinter-Signature header carries HMAC-SHA256 under it. Servers sharing a store need
    /// the same one. Without it, an enqueue with a callback_url is refused. Never logged or
    /// shown.
    #[arg(
        long,
        env = "HINTER_CALLBACK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub callback_secret: Option<String>,
    /// A network callbacks may reach although it is loopback, private, link-local or
    /// otherwise refused: a CIDR (127.0.0.1/32, 10.0.0.0/8, fd00::/8) or one address.
    /// Repeat, or separate with commas.
    #[arg(
        long,
        env = "HINTER_CALLBACK_ALLOW_NET",
        value_name = "CIDR",
        value_delimiter = ',',
        value_parser = hinter_core::callback_policy::parse_allowed_net
    )]
    pub callback_allow_net: Vec<IpNet>,
}

impl fmt::Debug for CallbackArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackArgs")
            .field(
                "callback_secret",
                &self.callback_secret.as_ref().map(|_| "***"),
            )
            .field("callback_allow_net", &self.callback_allow_net)
            .finish()
    }
}

impl CallbackArgs {
    /// The secret, if one was given and is not empty.
    fn secret(&self) -> Option<&str> {
        self.callback_secret.as_deref().filter(|s| !s.is_empty())
    }

    /// What the API checks at enqueue.
    pub fn server_config(&self) -> hinter_server::CallbackConfig {
        hinter_server::CallbackConfig {
            signing: self.secret().is_some(),
            policy: self.policy(),
        }
    }

    fn policy(&self) -> AddressPolicy {
        AddressPolicy::new(self.callback_allow_net.clone())
    }

    /// The deliverer of these settings.
    pub fn deliverer(&self) -> anyhow::Result<Deliverer> {
        Deliverer::new(self.secret().map(|s| s.as_bytes().to_vec()), self.policy())
    }
}

/// Posts callbacks: one HTTP client (connections are reused between deliveries to one
/// receiver), the secret and the address policy.
#[derive(Clone)]
pub struct Deliverer {
    http: reqwest::Client,
    secret: Option<Arc<[u8]>>,
    policy: Arc<AddressPolicy>,
}

impl Deliverer {
    pub fn new(secret: Option<Vec<u8>>, policy: AddressPolicy) -> anyhow::Result<Self> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("hinter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the callback HTTP client: {e}"))?;
        Ok(Self {
            http,
            secret: secret.map(Arc::from),
            policy,
        })
    }

    /// Registers the `hinter.callback` handler (queue `hinter.callbacks`) in `registry`.
    pub fn register(self, registry: &mut Registry) {
        let definition = JobDefinition {
            name: CALLBACK_JOB.into(),
            queue: Some(CALLBACK_QUEUE.into()),
            max_attempts: Some(CALLBACK_MAX_ATTEMPTS),
            timeout: Some(CALLBACK_TIMEOUT),
            singleton: false,
        };
        let deliverer = Arc::new(self);
        registry.register(
            definition,
            move |ctx: HandlerContext, delivery: Delivery| {
                let deliverer = deliverer.clone();
                async move {
                    tokio::select! {
                        outcome = deliverer.deliver(&ctx, &delivery) => outcome,
                        () = ctx.cancelled() => Err(JobError::retryable(format!(
                            "stopped before the receiver answered ({})",
                            ctx.stop_reason().map(|r| r.to_string()).unwrap_or_default()
                        ))),
                    }
                }
            },
        );
    }

    /// One attempt: `Ok({"status": code})` on a 2xx answer.
    async fn deliver(&self, ctx: &HandlerContext, delivery: &Delivery) -> Result<Value, JobError> {
        let url = reqwest::Url::parse(&delivery.url).map_err(|e| {
            JobError::permanent(format!(
                "not delivered: {:?} is not a URL: {e}",
                delivery.url
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(JobError::permanent(format!(
                "not delivered: the scheme {:?} is not allowed; callbacks use http or https",
                url.scheme()
            )));
        }
        // Literal addresses reach no resolver: check them here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            self.policy
                .check(ip)
                .map_err(|refusal| refused(&url, None, &refusal))?;
        }
        let Some(secret) = &self.secret else {
            return Err(JobError::retryable(
                "not sent: this server has no --callback-secret and callbacks are signed; \
                 it is retried, so configuring the secret delivers it",
            ));
        };
        let body = serde_json::to_vec(&delivery.outcome)
            .map_err(|e| JobError::permanent(format!("the outcome is not JSON: {e}")))?;
        let timestamp = ctx.now().timestamp();
        let state = delivery
            .outcome
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("finished");
        let request = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(secret, timestamp, &body))
            .header("Hinter-Delivery", ctx.id.to_string())
            .header("Hinter-Attempt", ctx.attempt.to_string())
            .header("Hinter-Event", format!("job.{state}"))
            .body(body);
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&url, &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(json!({ "status": status.as_u16() }));
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let excerpt = body_excerpt(response).await;
        let mut message = format!("receiver answered {status}");
        if status.is_redirection() {
            message.push_str(" (redirects are not followed");
            if let Some(location) = location {
                message.push_str(&format!("; Location: {}", clip(&location, BODY_EXCERPT)));
            }
            message.push(')');
        }
        if !excerpt.is_empty() {
            message.push_str(": ");
            message.push_str(&excerpt);
        }
        Err(JobError::retryable(message))
    }
}

/// The payload of a delivery job, as `hinter_core::followup::CallbackPayload` writes it; the
/// outcome is kept as it is stored, so the body posted is exactly that object.
#[derive(Debug, Deserialize)]
pub struct Delivery {
    pub url: String,
    pub outcome: Value,
}

/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = format!("t={timestamp},v1=");
    for byte in digest.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The permanent failure of a URL whose address the policy refuses.
fn refused(url: &reqwest::Url, host: Option<&str>, refusal: &Refusal) -> JobError {
    JobError::permanent(match host {
        Some(host) => format!(
            "not delivered to {host}: it resolves to {}, {}, and callbacks may not reach it \
             (allow its network with --callback-allow-net)",
            refusal.address,
            refusal.kind()
        ),
        None => format!(
            "not delivered to {}: {refusal}",
            url.host_str().unwrap_or("?")
        ),
    })
}

/// `host:port` of `url`, for messages.
fn authority(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// What a failed send means, in words; a refused address found by the resolver is
/// permanent, everything else retryable.
fn transport_error(url: &reqwest::Url, error: &reqwest::Error) -> JobError {
    let target = authority(url);
    if let Some(refusal) = find_cause::<AddressRefused>(error) {
        return refused(url, Some(&refusal.host), &refusal.refusal);
    }
    if let Some(failed) = find_cause::<ResolveFailed>(error) {
        return JobError::retryable(format!("cannot resolve {}: {}", failed.host, failed.reason));
    }
    if error.is_timeout() {
        return JobError::retryable(if error.is_connect() {
            format!(
                "connect to {target} timed out after {}s",
                CONNECT_TIMEOUT.as_secs()
            )
        } else {
            format!(
                "no answer from {target} within {}s",
                REQUEST_TIMEOUT.as_secs()
            )
        });
    }
    if let Some(io) = find_cause::<std::io::Error>(error) {
        use std::io::ErrorKind as K;
        let what = match io.kind() {
            K::ConnectionRefused => Some("refused"),
            K::ConnectionReset => Some("reset"),
            K::ConnectionAborted => Some("aborted"),
            K::TimedOut => Some("timed out"),
            _ => None,
        };
        if let Some(what) = what {
            return JobError::retryable(if error.is_connect() {
                format!("connect to {target} {what}")
            } else {
                format!("connection to {target} {what} before the answer")
            });
        }
    }
    let verb = if error.is_connect() {
        "cannot connect to"
    } else {
        "sending to"
    };
    JobError::retryable(format!("{verb} {target} failed: {}", causes(error)))
}

/// The first error of type `T` in `error`'s chain of causes.
fn find_cause<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Every cause's message but reqwest's own "error sending request for url (…)", joined.
fn causes(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = std::error::Error::source(error);
    while let Some(e) = current {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        current = e.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

/// The first [`BODY_EXCERPT`] bytes of a failed answer's body, as text on one line.
async fn body_excerpt(mut response: reqwest::Response) -> String {
    let mut bytes: Vec<u8> = Vec::new();
    while bytes.len() < BODY_EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clip(text.trim(), BODY_EXCERPT)
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn clip(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Resolves host names with the system's resolver (on tokio's blocking pool) and refuses
/// the name when any of its addresses is refused by the policy.
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map(|addrs| addrs.collect::<Vec<SocketAddr>>());
            let addrs = match found {
                Ok(addrs) => addrs,
                Err(e) => {
                    return Err(Box::new(ResolveFailed {
                        host,
                        reason: e.to_string(),
                    })
                        as Box<dyn std::error::Error + Send + Sync>)
                }
            };
            if addrs.is_empty() {
                return Err(Box::new(ResolveFailed {
                    host,
                    reason: "no address".into(),
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            for addr in &addrs {
                if let Err(refusal) = policy.check(addr.ip()) {
                    return Err(Box::new(AddressRefused { host, refusal })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A host name that resolves to an address the policy refuses.
#[derive(Debug)]
struct AddressRefused {
    host: String,
    refusal: Refusal,
}

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} resolves to a refused address: {}",
            self.host, self.refusal
        )
    }
}

impl std::error::Error for AddressRefused {}

/// A host name that does not resolve.
#[derive(Debug)]
struct ResolveFailed {
    host: String,
    reason: String,
}

impl fmt::Display for ResolveFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot resolve {}: {}", self.host, self.reason)
    }
}

impl std::error::Error for ResolveFailed {}

#[cfg(test)]
mod tests {
    use super::*;
    use hinter_core::callback_policy::parse_allowed_net;

    #[test]
    fn the_signature_is_t_and_v1_over_timestamp_dot_body() {
        // Reference: printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        let signature = signature(b"s3cret", 1_700_000_000, br#"{"a":1}"#);
        let (t, v1) = signature
            .split_once(',')
            .expect("two parts separated by a comma");
        assert_eq!(t, "t=1700000000");
        let hex = v1.strip_prefix("v1=").expect("v1=");
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"s3cret").expect("key");
        mac.update(br#"1700000000.{"a":1}"#);
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, expected);
        assert_eq!(
            hex,
            "1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }

    fn context() -> HandlerContext {
        HandlerContext::detached(uuid::Uuid::now_v7(), CALLBACK_JOB, CALLBACK_QUEUE, 1, 20)
    }

    fn delivery(url: &str) -> Delivery {
        Delivery {
            url: url.into(),
            outcome: json!({"job_id": "x", "state": "succeeded"}),
        }
    }

    #[tokio::test]
    async fn refused_addresses_fail_for_good_literal_or_resolved() {
        let deliverer = Deliverer::new(Some(b"k".to_vec()), AddressPolicy::default()).unwrap();
        for (url, says) in [
            ("http://127.0.0.1:9/x", "127.0.0.1 is a loopback address"),
            ("http://[::ffff:10.0.0.1]/", "10.0.0.1 is a private address"),
            (
                "http://169.254.169.254/latest",
                "169.254.169.254 is a link-local address",
            ),
            ("http://localhost:9/", "localhost: it resolves to "),
        ] {
            let e = deliverer
                .deliver(&context(), &delivery(url))
                .await
                .unwrap_err();
            assert!(!e.retryable, "{url}: {e}");
            assert!(e.message.starts_with("not delivered to "), "{url}: {e}");
            assert!(e.message.contains(says), "{url}: {e}");
            assert!(e.message.contains("--callback-allow-net"), "{url}: {e}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_and_says_where() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let policy = AddressPolicy::new(vec![parse_allowed_net("127.0.0.1/32").unwrap()]);
        let deliverer = Deliverer::new(Some(b"k".to_vec()), policy).unwrap();
        let e = deliverer
            .deliver(&context(), &delivery(&format!("http://127.0.0.1:{port}/")))
            .await
            .unwrap_err();
        assert!(e.retryable, "{e}");
        assert_eq!(e.message, format!("connect to 127.0.0.1:{port} refused"));
    }

    #[tokio::test]
    async fn without_a_secret_nothing_is_sent_and_the_attempt_is_retried() {
        let deliverer = Deliverer::new(None, AddressPolicy::default()).unwrap();
        let e = deliverer
            .deliver(&context(), &delivery("https://example.com/hook"))
            .await
            .unwrap_err();
        assert!(e.retryable, "{e}");
        assert!(e.message.contains("no --callback-secret"), "{e}");
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let args = CallbackArgs {
            callback_secret: Some("hunter2".into()),
            callback_allow_net: vec![],
        };
        assert!(!format!("{args:?}").contains("hunter2"));
    }
}
