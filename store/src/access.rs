//! Who may use the API, and what privileged users did.
//!
//! - **API tokens**: the store keeps a token's SHA-256 digest (hex), its name and its role,
//!   never the token itself; lookups go by digest. Roles are plain strings here (the API
//!   gives them meaning); the schema only admits `admin`, `operator`, `planner`, `device`.
//! - **Audit log**: one row per privileged action (token and device management, rule
//!   changes) and per alert acknowledgement or manual clear, with the actor, the action, its
//!   target and a JSON detail.

use telemetry::EventTime;

use crate::{Store, StoreError};

/// A stored API token (without the token).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_at: EventTime,
    pub revoked_at: Option<EventTime>,
}

/// One privileged action.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: EventTime,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// An action to record.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub at: EventTime,
    pub actor: &'a str,
    pub role: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub detail: serde_json::Value,
}

/// The JSON `detail` of an audit row, as both backends store it (text).
pub(crate) fn json_column(text: String) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(&text)
        .map_err(|_| StoreError::Corrupt { what: "audit detail", value: text })
}

/// Tokens and the audit log: see the module doc. The SQL is each backend's
/// (`pg/access.rs`, `sqlite/access.rs`).
impl Store {
    /// Store a new token by its digest.
    pub async fn create_token(
        &self,
        name: &str,
        role: &str,
        digest: &str,
        at: EventTime,
    ) -> Result<TokenRecord, StoreError> {
        dispatch!(self, s => s.create_token(name, role, digest, at).await)
    }

    /// Make sure a token with this digest exists (a bootstrap token from the
    /// configuration); an existing one, even revoked, is left as it is.
    pub async fn ensure_token(
        &self,
        name: &str,
        role: &str,
        digest: &str,
        at: EventTime,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.ensure_token(name, role, digest, at).await)
    }

    /// Make `digest` the one live token called `name`: store it as [`Store::ensure_token`]
    /// does, then revoke every other live token of that name (a rotated bootstrap token).
    /// Returns how many were revoked.
    pub async fn ensure_sole_token(
        &self,
        name: &str,
        role: &str,
        digest: &str,
        at: EventTime,
    ) -> Result<u64, StoreError> {
        self.ensure_token(name, role, digest, at).await?;
        dispatch!(self, s => s.revoke_other_tokens(name, digest, at).await)
    }

    /// The live (not revoked) token with this digest.
    pub async fn token_by_digest(&self, digest: &str) -> Result<Option<TokenRecord>, StoreError> {
        dispatch!(self, s => s.token_by_digest(digest).await)
    }

    /// Every token, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        dispatch!(self, s => s.tokens().await)
    }

    /// Revoke a token; `None` when no such token exists. Revoking twice keeps the first time.
    pub async fn revoke_token(
        &self,
        id: i64,
        at: EventTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        dispatch!(self, s => s.revoke_token(id, at).await)
    }

    /// Record a privileged action.
    pub async fn audit(&self, e: &AuditEntry<'_>) -> Result<(), StoreError> {
        dispatch!(self, s => s.audit(e).await)
    }

    /// The audit log, newest first, `limit` rows older than the entry `before_id`.
    pub async fn audit_log(
        &self,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let before = before_id.unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        dispatch!(self, s => s.audit_log(before, limit).await)
    }
}
