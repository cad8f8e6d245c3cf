//! Who is calling, and whether their role allows the route.
//!
//! - **Tokens**: bearer tokens `sccr_<64 hex>` (256 random bits), stored as their SHA-256
//!   digest with a name and a role; `Authorization: Bearer <token>`, or for the websocket
//!   (browsers cannot set headers on one) the subprotocol `sccr.token.<token>` offered
//!   beside `sccr.live`, or `?access_token=<token>`.
//! - **Roles** (docs/api.md): `admin` does everything; `operator` watches live state and
//!   handles alerts, device commands and road operations; `planner` reads history and exports
//!   and plans roadworks and events; `device`
//!   exists for MQTT credentials and may use no REST route.
//! - [`authenticate`] runs for every request: paths under `/api/` other than the public
//!   documents need a valid token (401 otherwise), and the caller becomes a [`Principal`]
//!   in the request's extensions. [`guard`] wraps each route with its role check (403).
//! - Failed authentications are limited per client address (an IPv6 address counts by its
//!   /64): past the budget, wrong tokens get 429 with `Retry-After` instead of 401. A
//!   presented token is checked first, so a valid token is never refused for what another
//!   client behind the same NAT or ingress did. The limiter tracks at most
//!   [`FAILURE_ADDRESSES_MAX`] addresses. Valid tokens are cached for a few seconds, so a
//!   revoked token stops working within [`CACHE_TTL`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use store::Store;

use crate::error::ApiError;
use crate::AppState;

/// How long a validated token is trusted without asking the store again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
const CACHE_MAX: usize = 10_000;
/// Failed authentications allowed per client address per [`FAILURE_WINDOW`], unless
/// configured otherwise ([`Auth::with_failure_limit`]).
pub const MAX_FAILURES: u32 = 20;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Most client addresses the failure limiter remembers; the stalest is forgotten first.
pub const FAILURE_ADDRESSES_MAX: usize = 10_000;

/// Paths under `/api/` that need no token.
const PUBLIC_API: &[&str] =
    &["/api/v1/openapi.json", "/api/v1/docs", "/api/v1/docs/mqtt-contract.md"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
    Planner,
    Device,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Planner, Role::Device];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Planner => "planner",
            Role::Device => "device",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Every human role: reading live state, segments, alerts and history.
pub const READERS: &[Role] = &[Role::Admin, Role::Operator, Role::Planner];
/// Acting on alerts and sending device commands.
pub const OPERATORS: &[Role] = &[Role::Admin, Role::Operator];
/// Bulk exports and non-JSON formats.
pub const PLANNERS: &[Role] = &[Role::Admin, Role::Planner];
/// Devices, rules, tokens, webhooks, dead letters.
pub const ADMINS: &[Role] = &[Role::Admin];

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub token_id: i64,
    pub name: String,
    pub role: Role,
}

/// A new token and its digest.
pub fn generate_token() -> Result<(String, String), ApiError> {
    let token = format!("sccr_{}", hex(&random_bytes::<32>()?));
    let digest = token_digest(&token);
    Ok((token, digest))
}

/// Bytes from the operating system's random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "operating system random source failed");
        ApiError::unavailable("no randomness available; retry shortly")
    })?;
    Ok(bytes)
}

/// The stored form of a token.
pub fn token_digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Token validation with its cache and the failure limiter; one per process.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<AuthInner>,
}

struct AuthInner {
    cache: Mutex<HashMap<String, (Principal, Instant)>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    max_failures: u32,
}

impl Default for Auth {
    fn default() -> Self {
        Self::with_failure_limit(MAX_FAILURES)
    }
}

impl Auth {
    /// `max_failures` failed authentications per address per minute (0: no limit).
    pub fn with_failure_limit(max_failures: u32) -> Self {
        Self {
            inner: Arc::new(AuthInner {
                cache: Mutex::default(),
                failures: Mutex::default(),
                max_failures,
            }),
        }
    }

    /// The principal holding `token`, from the cache or the store.
    pub async fn resolve(&self, store: &Store, token: &str) -> Result<Option<Principal>, ApiError> {
        let digest = token_digest(token);
        if let Some((p, at)) = lock(&self.inner.cache).get(&digest) {
            if at.elapsed() < CACHE_TTL {
                return Ok(Some(p.clone()));
            }
        }
        let Some(record) = store.token_by_digest(&digest).await? else {
            lock(&self.inner.cache).remove(&digest);
            return Ok(None);
        };
        let Some(role) = Role::parse(&record.role) else {
            return Ok(None);
        };
        let principal = Principal { token_id: record.id, name: record.name, role };
        let mut cache = lock(&self.inner.cache);
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(digest, (principal.clone(), Instant::now()));
        Ok(Some(principal))
    }

    /// Forget cached tokens (after a revocation in this process).
    pub fn forget_all(&self) {
        lock(&self.inner.cache).clear();
    }

    /// Seconds until `addr` may fail again, if it is over its failure budget.
    pub(crate) fn blocked(&self, addr: IpAddr) -> Option<u64> {
        if self.inner.max_failures == 0 {
            return None;
        }
        let failures = lock(&self.inner.failures);
        let (count, since) = failures.get(&client_key(addr))?;
        let elapsed = since.elapsed();
        // Whole seconds, rounded up: a client that waits that long is not refused again.
        (*count >= self.inner.max_failures && elapsed < FAILURE_WINDOW)
            .then(|| (FAILURE_WINDOW - elapsed).as_millis().div_ceil(1000).max(1) as u64)
    }

    pub(crate) fn record_failure(&self, addr: IpAddr) {
        if self.inner.max_failures == 0 {
            return;
        }
        let key = client_key(addr);
        let mut failures = lock(&self.inner.failures);
        if failures.len() >= FAILURE_ADDRESSES_MAX && !failures.contains_key(&key) {
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
            if failures.len() >= FAILURE_ADDRESSES_MAX {
                // Still full of live windows: forget the one that started first.
                let stalest = failures.iter().min_by_key(|(_, (_, since))| *since).map(|(k, _)| *k);
                if let Some(k) = stalest {
                    failures.remove(&k);
                }
            }
        }
        let entry = failures.entry(key).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 = entry.0.saturating_add(1);
    }

    /// Addresses the failure limiter holds now (for tests).
    pub fn tracked_addresses(&self) -> usize {
        lock(&self.inner.failures).len()
    }
}

/// What the failure limiter counts by: the address, or for IPv6 its /64 (one host's
/// share of a network, which it may use whole).
fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Prefix of the websocket subprotocol that carries a browser's token.
pub const TOKEN_PROTOCOL: &str = "sccr.token.";

/// The token of a request: the bearer header, or on the websocket route the
/// `sccr.token.<token>` subprotocol or `access_token` in the query.
fn presented_token(req: &Request) -> Option<Result<String, ApiError>> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        return Some(
            token.ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`")),
        );
    }
    if req.uri().path() == "/api/v1/live" {
        // Browsers: the token as a websocket subprotocol `sccr.token.<token>` beside
        // `sccr.live` (kept out of URLs, so out of consoles and access logs), or in the query.
        let offered = req.headers().get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
        for value in offered.filter_map(|v| v.to_str().ok()) {
            if let Some(token) =
                value.split(',').find_map(|p| p.trim().strip_prefix(TOKEN_PROTOCOL))
            {
                return Some(Ok(token.to_owned()));
            }
        }
        let query = req.uri().query()?;
        return serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| Ok(v));
    }
    None
}

fn unauthorized(message: &str) -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        message: message.into(),
        param: None,
        errors: Vec::new(),
    }
}

/// Middleware for the whole app: resolve the caller of `/api/` routes or answer 401.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/api/") || PUBLIC_API.contains(&path) {
        return next.run(req).await;
    }
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let token = match presented_token(&req) {
        None => return token_required(),
        Some(Err(e)) => return with_challenge(e),
        Some(Ok(t)) => t,
    };
    // The token first: a valid one is never refused for failures of other clients
    // sharing this address (a NAT, an ingress).
    match state.auth.resolve(&state.store, &token).await {
        Ok(Some(principal)) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(None) => {
            if let Some(retry) = state.auth.blocked(addr) {
                state.http.auth_failure("throttled");
                return too_many_failures(retry);
            }
            state.auth.record_failure(addr);
            state.http.auth_failure("unknown_token");
            with_challenge(unauthorized("the token is unknown or revoked"))
        }
        Err(e) => e.into_response(),
    }
}

fn too_many_failures(retry: u64) -> Response {
    let mut resp = ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        code: "too_many_requests",
        message: format!("too many failed authentications from this address; retry in {retry} s"),
        param: None,
        errors: Vec::new(),
    }
    .into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry));
    resp
}

fn token_required() -> Response {
    with_challenge(unauthorized("a bearer token is required (Authorization: Bearer <token>)"))
}

fn with_challenge(e: ApiError) -> Response {
    let mut resp = e.into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// A method router admitting only `roles`: `guard(auth::ADMINS, post(handler))`.
pub fn guard(roles: &'static [Role], route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    route.route_layer(axum::middleware::from_fn_with_state(roles, require))
}

/// The role check behind [`guard`].
pub async fn require(State(roles): State<&'static [Role]>, req: Request, next: Next) -> Response {
    match req.extensions().get::<Principal>() {
        Some(p) if roles.contains(&p.role) => next.run(req).await,
        Some(p) => ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: format!(
                "the {} role may not use this route (allowed: {})",
                p.role.as_str(),
                roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            ),
            param: None,
            errors: Vec::new(),
        }
        .into_response(),
        None => token_required(),
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(token_required)
    }
}
