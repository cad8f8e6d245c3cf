//! The alert rules admin API, and which rules are in force at start.
//!
//! - `GET /api/v1/alert-rules`: the document in force (`rules`, the JSON of `[alerts]`, to
//!   edit and `PUT` back), every rule in force with its origin (`rules_in_force`: `file`,
//!   `api` or `default`, and `replaces_default` for a rule with a default's id), and the
//!   API's versions an edit of the config file replaced (`replaced_by_file`).
//! - `PUT /api/v1/alert-rules`: replace the document (200).
//! - `POST /api/v1/alert-rules`: create one rule, its id in the body: 201 with `Location`,
//!   409 if a rule with that id is in force.
//! - `GET /api/v1/alert-rules/{id}`: one rule in force (shipped defaults too) with its origin.
//! - `PUT /api/v1/alert-rules/{id}`: create (201 with `Location`) or replace (200) one rule.
//! - `DELETE /api/v1/alert-rules/{id}`: remove one rule of the document; a shipped default
//!   is turned off with `enabled: false` instead (409).
//!
//! Every change is validated as a whole (400 for what the schema refuses, 422 beyond it,
//! every error with its key path), and the road segments and devices that new or changed
//! rules name are checked against the registry (422, e.g. `rules[2].scope.segments[0]: no
//! segment "seg-999" (did you mean "seg-99"?)`; a request whose body is one rule names
//! its errors under the body's paths, `scope.segments[0]`); rules kept as they were are not judged
//! again, so a device decommissioned since does not block an unrelated change. The
//! document is saved in the store (`stream_state`, key [`RULES_STATE_KEY`]) with the config
//! file's section it was made from, applied to the running engine, and audited.
//!
//! Precedence between the file, the API and the shipped defaults is
//! [`stream::alert::sources`]'s; [`StoredRules::choose`] applies it at start
//! ([`rules_at_start`], which also logs, saves and audits an edit of the file taken in, and
//! refuses to start on a file rule naming a road segment that does not exist).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::{AuditEntry, Store, StoreError};
use stream::alert::rule::ScopeDefinition;
use stream::alert::{
    file_replaces_all, merge_file_change, FileMerge, KnownSubjects, ReplacedRule, RuleDefinition,
    RuleError, RuleErrors, RuleOrigin,
};
use stream::{AlertRulesConfig, StreamCommand};
use telemetry::{DeviceKind, EventTime};
use tokio::sync::oneshot;

use crate::alerts::AlertControl;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::params::Params;
use crate::AppState;

/// The `stream_state` key of the rules set through the admin API.
pub const RULES_STATE_KEY: &str = "alert_rules";
/// The API versions replaced by edits of the file that are kept (the newest).
pub const MAX_REPLACED: usize = 200;

/// The alert rules in force and where they came from, as saved in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRules {
    /// The document in force.
    pub rules: AlertRulesConfig,
    /// The config file's `[alerts]` section `rules` was made from.
    pub file: AlertRulesConfig,
    /// The API's versions of rules and settings that edits of the file replaced, oldest
    /// first, at most [`MAX_REPLACED`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<ReplacedRule>,
}

/// How [`StoredRules::choose`] made the rules in force.
#[derive(Debug, Clone, PartialEq)]
pub enum RulesSource {
    /// Nothing saved through the API: the config file's section.
    File,
    /// The document saved through the API, made from the file's section as it is now.
    Api,
    /// The document saved through the API was made from another file section: the file's
    /// edit was taken in rule by rule (the file wins for what it changed).
    FileEdited(Box<FileMerge>),
    /// The document saved through the API is no longer valid (or would not be with the
    /// file's edit): the file's section, every API change kept as replaced.
    SavedInvalid(RuleErrors),
}

impl StoredRules {
    /// The file's section alone.
    pub fn of_file(file: &AlertRulesConfig) -> Self {
        Self { rules: file.clone(), file: file.clone(), replaced: Vec::new() }
    }

    fn with_replaced(mut self, earlier: Vec<ReplacedRule>, more: Vec<ReplacedRule>) -> Self {
        let mut all = earlier;
        all.extend(more);
        let excess = all.len().saturating_sub(MAX_REPLACED);
        all.drain(..excess);
        self.replaced = all;
        self
    }

    /// The rules in force given what was saved through the API and the file's section now
    /// (the precedence of [`stream::alert::sources`]).
    pub fn choose(
        stored: Option<StoredRules>,
        file: &AlertRulesConfig,
        at: EventTime,
    ) -> (StoredRules, RulesSource) {
        let Some(saved) = stored else { return (Self::of_file(file), RulesSource::File) };
        let fall_back = |saved: StoredRules, errors: RuleErrors| {
            let replaced = file_replaces_all(&saved.rules, file, at);
            let rules = Self::of_file(file).with_replaced(saved.replaced, replaced);
            (rules, RulesSource::SavedInvalid(errors))
        };
        if &saved.file == file {
            return match saved.rules.validate() {
                Ok(_) => (saved, RulesSource::Api),
                Err(errors) => fall_back(saved, errors),
            };
        }
        let merge = merge_file_change(&saved.file, &saved.rules, file, at);
        match merge.rules.validate() {
            Ok(_) => {
                let rules = StoredRules {
                    rules: merge.rules.clone(),
                    file: file.clone(),
                    replaced: Vec::new(),
                }
                .with_replaced(saved.replaced, merge.replaced.clone());
                (rules, RulesSource::FileEdited(Box::new(merge)))
            }
            Err(errors) => fall_back(saved, errors),
        }
    }

    /// The answer of `GET /api/v1/alert-rules` (and of every change).
    pub fn listing(&self) -> Value {
        json!({
            "rules": self.rules,
            "effective_rules": self.rules.effective_definitions().len(),
            "rules_in_force": self.rules.rules_in_force(&self.file),
            "replaced_by_file": self.replaced,
        })
    }
}

/// Why the rules cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RulesAtStartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "invalid configuration: [alerts] names road segments that do not exist (the store's segments, seeded from segments.seed):\n  - {}",
        .0.iter().map(|e| format!("alerts.{e}")).collect::<Vec<_>>().join("\n  - ")
    )]
    UnknownSegments(Vec<RuleError>),
    #[error("the alert rules cannot be saved: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The rules in force at start, from what was saved through the API and the file's
/// section (after the store was seeded, so that the registry is complete). An edit of the
/// file is taken in and logged at WARN (rule ids added, removed and changed by the file,
/// the API versions it replaced), saved and audited (`alert_rules.file_changed`). A rule
/// of the file that names a road segment that does not exist stops the start like a
/// configuration error; a device not registered yet, or a subject of an API rule that no
/// longer exists, is a WARN (devices register at runtime; API rules were checked when
/// saved).
pub async fn rules_at_start(
    store: &Store,
    file: &AlertRulesConfig,
) -> Result<(StoredRules, RulesSource), RulesAtStartError> {
    let saved = match store.load_stream_state(RULES_STATE_KEY).await? {
        None => None,
        Some(v) => match serde_json::from_value::<StoredRules>(v) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "the alert rules saved through the API are unreadable; the config file's [alerts] is in force");
                None
            }
        },
    };
    let at = EventTime::now();
    let (stored, source) = StoredRules::choose(saved, file, at);
    let replaced_ids = |r: &[ReplacedRule]| r.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let audit_detail = match &source {
        RulesSource::File => None,
        RulesSource::Api => {
            tracing::info!("alert rules: the config file's [alerts] with the changes made through the admin API (the file is unchanged since)");
            None
        }
        RulesSource::FileEdited(m) => {
            tracing::warn!(
                file_added = ?m.file_added,
                file_removed = ?m.file_removed,
                file_changed = ?m.file_changed,
                settings_changed = ?m.settings_changed,
                replaced_api_rules = ?replaced_ids(&m.replaced),
                "alert rules: the config file's [alerts] changed since rules were changed through the admin API; the file wins for what it changed, the other API changes stay (the replaced API versions are under replaced_by_file in GET /api/v1/alert-rules)"
            );
            Some((
                "alert_rules.file_changed",
                json!({
                    "file_added": m.file_added,
                    "file_removed": m.file_removed,
                    "file_changed": m.file_changed,
                    "settings_changed": m.settings_changed,
                    "replaced_api_rules": replaced_ids(&m.replaced),
                }),
            ))
        }
        RulesSource::SavedInvalid(errors) => {
            let replaced: Vec<ReplacedRule> =
                stored.replaced.iter().filter(|r| r.at == at).cloned().collect();
            tracing::warn!(
                %errors,
                "alert rules: the rules saved through the admin API are not valid (any more); the config file's [alerts] is in force, the API's versions are under replaced_by_file in GET /api/v1/alert-rules"
            );
            Some((
                "alert_rules.saved_invalid",
                json!({
                    "errors": errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "replaced_api_rules": replaced_ids(&replaced),
                }),
            ))
        }
    };
    if let Some((action, detail)) = audit_detail {
        let value = serde_json::to_value(&stored)?;
        store.save_stream_state(RULES_STATE_KEY, &value).await?;
        let entry = AuditEntry {
            at,
            actor: "config-file",
            role: "system",
            action,
            target: "alert-rules",
            detail,
        };
        if let Err(e) = store.audit(&entry).await {
            tracing::error!(error = %e, action, "audit log write failed");
        }
    }
    check_subjects_at_start(store, &stored).await?;
    Ok((stored, source))
}

/// The registry check of [`rules_at_start`].
async fn check_subjects_at_start(
    store: &Store,
    stored: &StoredRules,
) -> Result<(), RulesAtStartError> {
    let devices = store.devices().await?;
    let known = KnownSubjects {
        segments: store.segments().await?.into_iter().map(|s| s.id).collect(),
        devices: devices.iter().map(|d| d.id.clone()).collect(),
    };
    // The file's rules in force, by their place in the file (as check-config names them).
    let from_file = stored.rules.rules_in_force(&stored.file);
    let file_rules: Vec<&RuleDefinition> =
        from_file.iter().filter(|r| r.origin == RuleOrigin::File).map(|r| &r.rule).collect();
    let in_file = stored.file.unknown_subjects(&known, |d| file_rules.contains(&d));
    for e in &in_file.devices {
        tracing::warn!("alerts.{e}: the rule watches it once it is registered");
    }
    let by_api = stored.rules.unknown_subjects(&known, |d| !file_rules.contains(&d));
    for e in by_api.clone().all() {
        tracing::warn!("alert rule set through the admin API: {e} (no longer in the registry)");
    }
    let unknown_kinds: Vec<String> = devices
        .iter()
        .filter(|d| d.kind.as_deref().is_some_and(|k| k.parse::<DeviceKind>().is_err()))
        .map(|d| format!("{} ({})", d.id, d.kind.as_deref().unwrap_or_default()))
        .collect();
    if !unknown_kinds.is_empty() {
        tracing::warn!(
            count = unknown_kinds.len(),
            first = ?&unknown_kinds[..unknown_kinds.len().min(10)],
            "registered devices with a kind outside {}: rules scoped by kind do not match them; PATCH /api/v1/devices/{{id}} gives them a known kind",
            DeviceKind::names()
        );
    }
    if in_file.segments.is_empty() {
        Ok(())
    } else {
        Err(RulesAtStartError::UnknownSegments(in_file.segments))
    }
}

/// The handle of the running alert engine, or 503.
fn control(state: &AppState) -> Result<&AlertControl, ApiError> {
    state
        .alerts
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("no alert engine runs in this process"))
}

/// `GET /api/v1/alert-rules`: the rules in force, each with its origin.
pub async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    Params::parse(raw.as_deref())?.finish()?;
    let stored = control(&state)?.rules.lock().await.clone();
    Ok(Json(stored.listing()))
}

/// `invalid_rules` with every error: 422 when all are beyond the schema, else 400.
fn invalid_rules(errors: &[RuleError]) -> ApiError {
    let first = errors.first().map(|e| e.path.clone()).unwrap_or_default();
    let text = RuleErrors(errors.to_vec()).to_string();
    let error = if errors.iter().all(|e| e.beyond_schema) {
        ApiError::unprocessable(&first, text)
    } else {
        ApiError::bad_field(&first, text)
    };
    ApiError {
        code: "invalid_rules",
        errors: errors.iter().map(|e| (e.path.clone(), e.message.clone())).collect(),
        ..error
    }
}

/// A serde error of a rules body, under its path, in words: names in quotes, without the
/// line and column of a body the caller did not write as lines.
fn unreadable(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.inner();
    let text = inner.to_string();
    let suffix = format!(" at line {} column {}", inner.line(), inner.column());
    let mut message = text.strip_suffix(&suffix).unwrap_or(&text).replace('`', "\"");
    for (serde, words) in [
        ("unknown variant ", " is none of the forms: "),
        ("unknown field ", " is not a key here; the keys are "),
    ] {
        if let Some((name, expected)) =
            message.strip_prefix(serde).and_then(|rest| rest.split_once(", expected "))
        {
            let expected = expected.strip_prefix("one of ").unwrap_or(expected);
            message = format!("{name}{words}{expected}");
        }
    }
    ApiError {
        errors: vec![(path.clone(), message.clone())],
        code: "invalid_rules",
        ..ApiError::bad_field(&path, message)
    }
}

/// `PUT /api/v1/alert-rules`: replace the rules document (JSON of the `[alerts]` section).
pub async fn replace(
    State(state): State<AppState>,
    who: Principal,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    // serde reads a struct from a JSON array too; the document is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError {
            code: "invalid_rules",
            ..ApiError::bad_field("body", "the rules document must be a JSON object")
        });
    }
    let mut de = serde_json::Deserializer::from_slice(&body);
    let doc: AlertRulesConfig =
        serde_path_to_error::deserialize(&mut de).map_err(|e| unreadable(&e))?;
    let (stored, _) =
        apply_rules(&state, &who, "alert_rules.replace", "alert-rules", None, |_| Ok(doc)).await?;
    Ok(Json(stored.listing()))
}

/// Whether the scope names registry subjects (segments or devices).
fn names_subjects(def: &RuleDefinition) -> bool {
    matches!(def.scope, ScopeDefinition::Segments(_) | ScopeDefinition::Devices(_))
}

/// For a request whose body is the one rule `one`: its errors under the body's own paths
/// (`scope.kind`, not `rules[3].scope.kind` of the document it would make); others as
/// they are.
fn in_body(
    mut errors: Vec<RuleError>,
    doc: &AlertRulesConfig,
    one: Option<&str>,
) -> Vec<RuleError> {
    let Some(index) = one.and_then(|id| doc.rules.iter().position(|r| r.id == id)) else {
        return errors;
    };
    let prefix = format!("rules[{index}]");
    for e in &mut errors {
        match e.path.strip_prefix(&prefix) {
            Some("") => e.path = "body".to_owned(),
            Some(rest) if rest.starts_with('.') => e.path = rest[1..].to_owned(),
            _ => {}
        }
    }
    errors
}

/// Validate, check against the registry, save and apply the rules document `change` makes
/// of the current one (`one`: the id of the rule the request's body is, if it is one).
/// Returns the rules in force before and now.
async fn apply_rules(
    state: &AppState,
    who: &Principal,
    action: &str,
    target: &str,
    one: Option<&str>,
    change: impl FnOnce(&StoredRules) -> Result<AlertRulesConfig, ApiError>,
) -> Result<(StoredRules, StoredRules), ApiError> {
    let control = control(state)?;
    let mut current = control.rules.lock().await;
    let doc = change(&current)?;
    let rules = doc.validate().map_err(|errors| invalid_rules(&in_body(errors.0, &doc, one)))?;
    // The registry check, for the rules new or changed by this request.
    let new_or_changed = |d: &RuleDefinition| !current.rules.rules.contains(d);
    if doc.rules.iter().any(|d| new_or_changed(d) && names_subjects(d)) {
        let known = KnownSubjects {
            segments: state.store.segments().await?.into_iter().map(|s| s.id).collect(),
            devices: state.store.devices().await?.into_iter().map(|d| d.id).collect(),
        };
        let unknown = doc.unknown_subjects(&known, new_or_changed);
        if !unknown.is_empty() {
            return Err(invalid_rules(&in_body(unknown.all(), &doc, one)));
        }
    }
    let next =
        StoredRules { rules: doc, file: current.file.clone(), replaced: current.replaced.clone() };
    let value =
        serde_json::to_value(&next).map_err(|e| ApiError::bad_field("body", e.to_string()))?;
    state.store.save_stream_state(RULES_STATE_KEY, &value).await?;
    let (done, applied) = oneshot::channel();
    if control.commands.send(StreamCommand::SetRules { rules, done }).await.is_err()
        || applied.await.is_err()
    {
        return Err(ApiError::unavailable(
            "the stream task is gone; the rules are saved and apply at the next start",
        ));
    }
    let before = std::mem::replace(&mut *current, next);
    let effective = current.rules.effective_definitions().len();
    crate::access::audit(state, who, action, target, json!({ "effective_rules": effective })).await;
    Ok((before, current.clone()))
}

fn rule_id(raw: &str) -> Result<String, ApiError> {
    stream::alert::RuleId::parse(raw).map(|id| id.as_str().to_owned()).map_err(|_| {
        ApiError::bad_param(
            "id",
            "a rule id is 1 to 64 characters of [a-z0-9._-], starting with a letter or digit",
        )
    })
}

/// Whether a rule with `id` is in force (the document's or a shipped default).
fn in_force(stored: &StoredRules, id: &str) -> bool {
    stored.rules.effective_definitions().iter().any(|d| d.id == id)
}

/// `GET /api/v1/alert-rules/{id}`: one rule in force, with its origin.
pub async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = rule_id(&id)?;
    let current = control(&state)?.rules.lock().await;
    let found = current.rules.rules_in_force(&current.file).into_iter().find(|r| r.rule.id == id);
    let r = found.ok_or_else(|| ApiError::not_found(format!("no rule {id}")))?;
    Ok(Json(json!({ "rule": r.rule, "origin": r.origin, "replaces_default": r.replaces_default })))
}

/// One rule from a body; `path_id` (the path's) must agree with the body's id, if any.
fn rule_body(body: &Bytes, path_id: Option<&str>) -> Result<RuleDefinition, ApiError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_field("body", format!("the body must be one rule as JSON: {e}"))
    })?;
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::bad_field("body", "the body must be one rule as a JSON object"));
    };
    match (obj.get("id"), path_id) {
        (None | Some(Value::Null), None) => {
            return Err(ApiError::bad_field("id", "id is required: the new rule's id"))
        }
        (None | Some(Value::Null | Value::String(_)), _) => {}
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_field("id", "id must be a string (the path's) or absent"))
        }
        (Some(_), None) => return Err(ApiError::bad_field("id", "id must be a string")),
    }
    if let Some(id) = path_id {
        match obj.get("id") {
            Some(Value::String(given)) if given != id => {
                return Err(ApiError::unprocessable(
                    "id",
                    format!("the body's id {given:?} differs from the path's {id:?}"),
                ))
            }
            _ => {
                obj.insert("id".into(), Value::String(id.to_owned()));
            }
        }
    }
    let text = value.to_string();
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| unreadable(&e))
}

/// 201 Created with the rule's `Location` and the rules in force.
fn created(id: &str, stored: &StoredRules) -> Response {
    let location = format!("/api/v1/alert-rules/{id}");
    (StatusCode::CREATED, [(header::LOCATION, location)], Json(stored.listing())).into_response()
}

/// Add `rule` to the document, or put it in the place of the rule with its id.
fn with_rule(doc: &AlertRulesConfig, rule: RuleDefinition) -> AlertRulesConfig {
    let mut doc = doc.clone();
    match doc.rules.iter_mut().find(|r| r.id == rule.id) {
        Some(slot) => *slot = rule,
        None => doc.rules.push(rule),
    }
    doc
}

/// `POST /api/v1/alert-rules`: create one rule, its id in the body.
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    body: Bytes,
) -> Result<Response, ApiError> {
    let rule = rule_body(&body, None)?;
    let id = rule.id.clone();
    let target = format!("alert-rule/{id}");
    let (_, now) = apply_rules(&state, &who, "alert_rule.create", &target, Some(&id), |current| {
        if in_force(current, &id) {
            return Err(ApiError::conflict(format!(
                "a rule {id} is in force; PUT /api/v1/alert-rules/{id} replaces it"
            )));
        }
        Ok(with_rule(&current.rules, rule))
    })
    .await?;
    Ok(created(&id, &now))
}

/// `PUT /api/v1/alert-rules/{id}`: create (201) or replace (200) one rule; its `id` is the
/// path's.
pub async fn put(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = rule_id(&id)?;
    let rule = rule_body(&body, Some(&id))?;
    let target = format!("alert-rule/{id}");
    let (before, now) =
        apply_rules(&state, &who, "alert_rule.put", &target, Some(&id), |current| {
            Ok(with_rule(&current.rules, rule))
        })
        .await?;
    if in_force(&before, &id) {
        Ok(Json(now.listing()).into_response())
    } else {
        Ok(created(&id, &now))
    }
}

/// `DELETE /api/v1/alert-rules/{id}`: remove one rule of the document.
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = rule_id(&id)?;
    let target = format!("alert-rule/{id}");
    let (_, now) = apply_rules(&state, &who, "alert_rule.delete", &target, None, |current| {
        let mut doc = current.rules.clone();
        let before = doc.rules.len();
        doc.rules.retain(|r| r.id != id);
        if doc.rules.len() == before {
            if in_force(current, &id) {
                return Err(ApiError::conflict(format!(
                    "{id} is a shipped default rule: turn it off with PUT /api/v1/alert-rules/{id} and \"enabled\": false, or air_quality_defaults = false"
                )));
            }
            return Err(ApiError::not_found(format!("no rule {id}")));
        }
        Ok(doc)
    })
    .await?;
    Ok(Json(now.listing()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
