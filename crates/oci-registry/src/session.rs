//! One registry's HTTP session: the reqwest client, authentication (Basic, or the bearer-token
//! flow of the distribution spec with renewal on expiry or a 401), request counting, and the
//! retry policy (backoff, `Retry-After`). Written on reqwest directly because the registry's
//! response headers (`Retry-After`, `WWW-Authenticate`, `Location`, `OCI-Chunk-Min-Length`)
//! drive every decision here and client libraries hide them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use url::Url;

use crate::Credentials;

/// Longest `Retry-After` we wait for; a registry asking for more fails the push instead of
/// stalling a CI job.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why a request did not succeed, with what the retry policy needs.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: Option<u16>,
    /// Worth another attempt: connection trouble, timeouts, 408, 429, 5xx.
    pub(crate) transient: bool,
    /// The registry's `Retry-After`.
    pub(crate) retry_after: Option<Duration>,
    /// The connection could not be made at all (DNS, refused, TLS).
    pub(crate) connect: bool,
    /// The token service refused the credentials.
    pub(crate) auth: bool,
    pub(crate) detail: String,
}

impl Failure {
    pub(crate) fn other(detail: impl Into<String>) -> Failure {
        Failure {
            status: None,
            transient: false,
            retry_after: None,
            connect: false,
            auth: false,
            detail: detail.into(),
        }
    }

    fn from_reqwest(e: &reqwest::Error) -> Failure {
        Failure {
            status: e.status().map(|s| s.as_u16()),
            transient: e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
            retry_after: None,
            connect: e.is_connect(),
            auth: false,
            detail: error_text(e),
        }
    }

    /// A non-success answer: its status, the registry's error codes and `Retry-After`.
    pub(crate) async fn from_response(resp: Response) -> Failure {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = resp.bytes().await.unwrap_or_default();
        let what = registry_errors(&body).unwrap_or_else(|| {
            String::from_utf8_lossy(&body[..body.len().min(300)])
                .trim()
                .to_owned()
        });
        let mut detail = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_owned();
        if !what.is_empty() {
            detail = format!("{detail}: {what}");
        }
        Failure {
            status: Some(status.as_u16()),
            transient: status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT,
            retry_after,
            connect: false,
            auth: false,
            detail,
        }
    }
}

/// `{"errors":[{"code","message","detail"}]}` of the distribution spec, as one line.
pub(crate) fn registry_errors(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Error>,
    }
    #[derive(serde::Deserialize)]
    struct Error {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: serde_json::Value,
    }
    let e: Errors = serde_json::from_slice(body).ok()?;
    let parts: Vec<String> = e
        .errors
        .iter()
        .map(|e| {
            let mut s = format!("{}: {}", e.code, e.message);
            match &e.detail {
                serde_json::Value::Null => {}
                serde_json::Value::String(d) if d.is_empty() => {}
                serde_json::Value::String(d) => s = format!("{s} ({d})"),
                other => s = format!("{s} ({other})"),
            }
            s
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// A token service's answer: the token (`token`, else `access_token`) and its lifetime.
pub(crate) fn parse_token_answer(body: &[u8]) -> Result<(String, Option<u64>), String> {
    #[derive(serde::Deserialize)]
    struct TokenAnswer {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let answer: TokenAnswer =
        serde_json::from_slice(body).map_err(|e| format!("sent no token: {e}"))?;
    let token = answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token)
        .ok_or_else(|| "sent no token".to_owned())?;
    Ok((token, answer.expires_in))
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when =
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let now = time::OffsetDateTime::now_utc();
    Some(Duration::try_from(when - now).unwrap_or(Duration::ZERO))
}

/// An error with its causes (reqwest keeps the interesting part, e.g. DNS, in the source).
pub(crate) fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text = format!("{text}: {t}");
        }
        source = s.source();
    }
    text
}

/// A `WWW-Authenticate` challenge we can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// The first Bearer or Basic challenge of a `WWW-Authenticate` value.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let challenges = http_auth::parse_challenges(header).ok()?;
    for c in challenges {
        if c.scheme.eq_ignore_ascii_case("bearer") {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            if let Some(realm) = param("realm") {
                return Some(Challenge::Bearer {
                    realm,
                    service: param("service"),
                });
            }
        } else if c.scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
    }
    None
}

#[derive(Debug)]
enum AuthState {
    /// Nothing asked for yet: requests go out without credentials.
    Open,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        token: String,
        renew_at: Instant,
    },
}

pub(crate) struct Session {
    http: reqwest::Client,
    /// `scheme://host/`.
    base: Url,
    creds: Credentials,
    /// Token scopes: pull+push on the target, pull on mount sources.
    scopes: Vec<String>,
    auth: tokio::sync::Mutex<AuthState>,
    /// The token realm once the registry asked for bearer tokens (for error messages).
    realm: std::sync::Mutex<Option<String>>,
    requests: AtomicU64,
    token_requests: AtomicU64,
    attempts: u32,
}

impl Session {
    pub(crate) fn new(
        http: reqwest::Client,
        base: Url,
        creds: Credentials,
        scopes: Vec<String>,
        attempts: u32,
    ) -> Session {
        Session {
            http,
            base,
            creds,
            scopes,
            auth: tokio::sync::Mutex::new(AuthState::Open),
            realm: std::sync::Mutex::new(None),
            requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
            attempts: attempts.max(1),
        }
    }

    pub(crate) fn url(&self, path: &str) -> Url {
        let mut u = self.base.clone();
        u.set_path(path);
        u
    }

    /// A `Location` header, which may be relative to the registry.
    pub(crate) fn location(&self, resp: &Response) -> Result<Url, Failure> {
        let loc = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Failure::other("the registry's answer has no Location header"))?;
        self.base
            .join(loc)
            .map_err(|e| Failure::other(format!("bad Location header '{loc}': {e}")))
    }

    /// Requests sent to the registry and its token service so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Where bearer tokens come from, if the registry uses them.
    pub(crate) fn token_realm(&self) -> Option<String> {
        self.realm.lock().ok().and_then(|r| r.clone())
    }

    pub(crate) fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }

    /// Credentials go only to the registry itself, never to another host an upload
    /// `Location` points at (the distribution spec allows e.g. storage URLs there).
    fn same_origin(&self, u: &Url) -> bool {
        u.scheme() == self.base.scheme()
            && u.host_str() == self.base.host_str()
            && u.port_or_known_default() == self.base.port_or_known_default()
    }

    fn basic_header(&self) -> Option<HeaderValue> {
        match &self.creds {
            Credentials::Basic { username, password } => {
                let enc = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                let mut v = HeaderValue::from_str(&format!("Basic {enc}")).ok()?;
                v.set_sensitive(true);
                Some(v)
            }
            _ => None,
        }
    }

    /// The `Authorization` for the next request, renewing a bearer token about to expire.
    async fn authorization(&self) -> Result<Option<HeaderValue>, Failure> {
        let mut state = self.auth.lock().await;
        match &mut *state {
            AuthState::Open => Ok(None),
            AuthState::Basic => Ok(self.basic_header()),
            AuthState::Bearer {
                realm,
                service,
                token,
                renew_at,
            } => {
                if Instant::now() >= *renew_at {
                    let (t, at) = self.fetch_token(realm, service.as_deref()).await?;
                    *token = t;
                    *renew_at = at;
                }
                let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| Failure::other("the token service sent an unusable token"))?;
                v.set_sensitive(true);
                Ok(Some(v))
            }
        }
    }

    /// After a 401: adopt the registry's challenge, or renew a bearer token the registry
    /// no longer accepts (`used` is what the refused request carried, so that concurrent
    /// refusals renew once). Whether retrying the request can now succeed.
    async fn answer(
        &self,
        challenge: Option<Challenge>,
        used: Option<&HeaderValue>,
    ) -> Result<bool, Failure> {
        let mut state = self.auth.lock().await;
        let current = match &*state {
            AuthState::Open => None,
            AuthState::Basic => self.basic_header(),
            AuthState::Bearer { token, .. } => {
                HeaderValue::from_str(&format!("Bearer {token}")).ok()
            }
        };
        if current.as_ref() != used {
            // Another request already renewed what this one was refused with.
            return Ok(true);
        }
        match challenge {
            Some(Challenge::Basic) => {
                if matches!(*state, AuthState::Basic) || self.basic_header().is_none() {
                    return Ok(false);
                }
                *state = AuthState::Basic;
                Ok(true)
            }
            Some(Challenge::Bearer { realm, service }) => {
                let (token, renew_at) = self.fetch_token(&realm, service.as_deref()).await?;
                if let Ok(mut r) = self.realm.lock() {
                    *r = Some(realm.clone());
                }
                *state = AuthState::Bearer {
                    realm,
                    service,
                    token,
                    renew_at,
                };
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The bearer-token flow: one token for every scope of this push, from the realm the
    /// registry named, with the user's credentials (Basic, or an identity token as an
    /// OAuth2 refresh token, as docker does).
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
    ) -> Result<(String, Instant), Failure> {
        let realm_url = Url::parse(realm).map_err(|e| {
            Failure::other(format!(
                "the registry named an invalid token realm '{realm}': {e}"
            ))
        })?;
        let rb = match &self.creds {
            Credentials::Token(refresh) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", refresh.clone()),
                    ("client_id", "hab-oci".to_owned()),
                    ("scope", self.scopes.join(" ")),
                ];
                if let Some(s) = service {
                    form.push(("service", s.to_owned()));
                }
                self.http.post(realm_url).form(&form)
            }
            creds => {
                let mut query: Vec<(&str, &str)> =
                    self.scopes.iter().map(|s| ("scope", s.as_str())).collect();
                if let Some(s) = service {
                    query.push(("service", s));
                }
                let mut rb = self.http.get(realm_url).query(&query);
                if let Credentials::Basic { username, password } = creds {
                    rb = rb
                        .query(&[("account", username.as_str())])
                        .basic_auth(username, Some(password));
                }
                rb
            }
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let resp = rb.send().await.map_err(|e| Failure::from_reqwest(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let mut f = Failure::from_response(resp).await;
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                f.auth = true;
                f.transient = false;
                f.detail = format!(
                    "the token service {realm} refused the credentials ({})",
                    f.detail
                );
            } else {
                f.detail = format!("token service {realm}: {}", f.detail);
            }
            return Err(f);
        }
        let body = resp.bytes().await.map_err(|e| Failure::from_reqwest(&e))?;
        let (token, expires_in) = parse_token_answer(&body)
            .map_err(|e| Failure::other(format!("the token service {realm} {e}")))?;
        // The spec's default lifetime is 60 s; renew a little early so that a request
        // never leaves with a token about to lapse.
        let lifetime = Duration::from_secs(expires_in.unwrap_or(60).max(1));
        let margin = (lifetime / 10).min(Duration::from_secs(10));
        Ok((token, started + lifetime - margin))
    }

    /// Sends one request built by `build` (called again for a retry, so streaming bodies
    /// start over), with the session's credentials. A 401 is answered twice at most: once
    /// to learn the challenge, once more to renew a token the registry refused.
    pub(crate) async fn send(
        &self,
        build: &(dyn Fn(&reqwest::Client) -> Result<RequestBuilder, Failure> + Sync),
    ) -> Result<Response, Failure> {
        let mut answered = 0;
        loop {
            let mut req = build(&self.http)?
                .build()
                .map_err(|e| Failure::from_reqwest(&e))?;
            let ours = self.same_origin(req.url());
            let used = if ours {
                self.authorization().await?
            } else {
                None
            };
            if let Some(h) = &used {
                req.headers_mut().insert(AUTHORIZATION, h.clone());
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let resp = self
                .http
                .execute(req)
                .await
                .map_err(|e| Failure::from_reqwest(&e))?;
            if resp.status() == StatusCode::UNAUTHORIZED && ours && answered < 2 {
                answered += 1;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                if self.answer(challenge, used.as_ref()).await? {
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// Runs `op` until it succeeds, fails for good, or the attempts are spent; waits
    /// between attempts as the registry asks (`Retry-After`) or with exponential backoff.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut backoff = Duration::from_millis(200);
        let mut n = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(mut f) if n < self.attempts && f.transient => {
                    let wait = match f.retry_after {
                        Some(d) if d > MAX_RETRY_AFTER => {
                            f.detail = format!(
                                "{} (the registry asked to retry after {} s, longer than hab-oci waits)",
                                f.detail,
                                d.as_secs()
                            );
                            return Err(f);
                        }
                        Some(d) => d,
                        None => backoff,
                    };
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    n += 1;
                }
                Err(f) => return Err(f),
            }
        }
    }

    /// `send`, then a non-success status (other than those in `ok`) becomes a `Failure`.
    pub(crate) async fn expect(
        &self,
        ok: &[StatusCode],
        build: &(dyn Fn(&reqwest::Client) -> Result<RequestBuilder, Failure> + Sync),
    ) -> Result<Response, Failure> {
        let resp = self.send(build).await?;
        if ok.contains(&resp.status()) {
            Ok(resp)
        } else {
            Err(Failure::from_response(resp).await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/redis:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer"), None);
        assert_eq!(parse_challenge("garbage ,,, ="), None);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
        let text = later
            .format(&time::format_description::well_known::Rfc2822)
            .expect("format");
        let d = parse_retry_after(&text).expect("date");
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn registry_error_bodies() {
        assert_eq!(
            registry_errors(
                br#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":"bad type"}]}"#
            )
            .as_deref(),
            Some("MANIFEST_INVALID: manifest invalid (bad type)")
        );
        assert_eq!(registry_errors(b"<html>"), None);
    }
}
