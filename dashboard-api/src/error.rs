//! The one place errors become HTTP responses: a status and a JSON body
//! `{"error": {"code": "...", "message": "...", "param": "..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Every `code` an error body carries: the code, its HTTP statuses and what it means
/// (the docs page's table; a test finds every code this crate writes in it).
pub const CODES: [(&str, &str, &str); 24] = [
    ("bad_parameter", "400, 422", "A query or path parameter is invalid (400), or valid but refused with another one (422); param names it"),
    ("bad_field", "400, 422", "A body field is missing or invalid (400), or valid but refused on grounds the schema cannot state, such as an unknown segment (422); param names it"),
    ("invalid_rules", "400, 422", "An alert rules document or rule is refused; errors lists every problem with its key path"),
    ("bad_request", "400", "Input refused before any field could be read: a body that is not JSON, a path segment that does not parse"),
    ("destination_refused", "400", "A webhook URL outside the allowed destinations"),
    ("unauthorized", "401", "No token, or an unknown or revoked one"),
    ("forbidden", "403", "The token's role may not use this operation"),
    ("not_found", "404", "No such route or object"),
    ("method_not_allowed", "405", "The path exists, the method does not"),
    ("not_acceptable", "406", "Accept names no format the operation produces"),
    ("conflict", "409", "A move the alert or operation lifecycle forbids, a change to an ended or cancelled operation, a device that exists, a reused Idempotency-Key"),
    ("precondition_failed", "412", "If-Match names a version of the operation that is no longer current: read it again"),
    ("precondition_required", "428", "The change needs an If-Match header with the version read (its ETag)"),
    ("payload_too_large", "413", "The body is over the limit"),
    ("unsupported_media_type", "415", "The body is not application/json"),
    ("range_not_satisfiable", "416", "A byte range outside the basemap archive"),
    ("upgrade_required", "426", "A plain HTTP request to the websocket"),
    ("too_many_requests", "429", "Too many failed authentications from this address; retry later"),
    ("internal", "500", "A fault of the server; the server log has the details"),
    ("unavailable", "503", "The database (or another dependency) is unreachable; retry shortly"),
    ("timeout", "503", "No answer within api.request_timeout"),
    ("too_many_connections", "503", "Over api.max_connections"),
    ("broker_unreachable", "503", "/readyz: the MQTT broker is unreachable"),
    ("writer_stalled", "503", "/readyz: the batch writer is stalled"),
];

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The query parameter or field at fault, when there is one.
    pub param: Option<String>,
    /// Every problem found, each with its key path (`errors: [{path, message}]` in the
    /// body), for documents validated as a whole such as alert rules.
    pub errors: Vec<(String, String)>,
}

impl ApiError {
    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_parameter",
            message: message.into(),
            param: Some(param.to_owned()),
            errors: Vec::new(),
        }
    }

    /// A request body field that is missing or invalid.
    pub fn bad_field(field: &str, message: impl Into<String>) -> Self {
        Self { code: "bad_field", ..Self::bad_param(field, message) }
    }

    /// A body that matches the OpenAPI schema but that the server refuses on what the
    /// schema cannot say: a reference to an object that does not exist, fields that
    /// contradict each other (422).
    pub fn unprocessable(field: &str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, ..Self::bad_field(field, message) }
    }

    /// Parameters each valid but refused together (422).
    pub fn bad_combination(param: &str, message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, ..Self::bad_param(param, message) }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            param: None,
            errors: Vec::new(),
        }
    }

    /// A query parameter names a device or road segment that does not exist (404), so a
    /// typo is not mistaken for a subject without data.
    pub fn unknown(param: &str, message: impl Into<String>) -> Self {
        Self { param: Some(param.to_owned()), ..Self::not_found(message) }
    }

    /// The resource is in a state that does not allow the request (an illegal transition).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: message.into(),
            param: None,
            errors: Vec::new(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
            param: None,
            errors: Vec::new(),
        }
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match e {
            // Each parameter was read; the store refuses their combination.
            store::StoreError::InvalidQuery { param, message } => {
                return ApiError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    ..ApiError::bad_param(param, message)
                }
            }
            store::StoreError::AlertNotFound(id) => {
                return ApiError::not_found(format!("alert {id} does not exist"))
            }
            store::StoreError::AlertTransition { .. }
            | store::StoreError::AlertNotShelved(_)
            | store::StoreError::DeviceExists(_) => return ApiError::conflict(e.to_string()),
            store::StoreError::UnknownSegment(_) => {
                return ApiError::unprocessable("segment", e.to_string())
            }
            store::StoreError::UnknownGateway(_) => {
                return ApiError::unprocessable("gateway", e.to_string())
            }
            store::StoreError::OperationInvalid { ref field, .. } => {
                return ApiError::bad_field(field, e.to_string())
            }
            store::StoreError::OperationNotFound(_) => return ApiError::not_found(e.to_string()),
            store::StoreError::OperationFinal { .. }
            | store::StoreError::OperationTransition { .. } => {
                return ApiError::conflict(e.to_string())
            }
            store::StoreError::OperationVersion { .. } => {
                return ApiError {
                    status: StatusCode::PRECONDITION_FAILED,
                    code: "precondition_failed",
                    ..ApiError::conflict(e.to_string())
                }
            }
            _ => {}
        }
        tracing::error!(error = %e, "store error in API");
        if e.is_transient() {
            ApiError::unavailable("the database is unavailable; retry shortly")
        } else {
            ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "internal",
                message: "internal error; see the server log".into(),
                param: None,
                errors: Vec::new(),
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error =
            serde_json::json!({ "code": self.code, "message": self.message, "param": self.param });
        if !self.errors.is_empty() {
            error["errors"] = self
                .errors
                .iter()
                .map(|(path, message)| serde_json::json!({"path": path, "message": message}))
                .collect();
        }
        let body = serde_json::json!({ "error": error });
        (self.status, Json(body)).into_response()
    }
}

/// Middleware: an answer in plain text from the framework itself (an extractor's
/// rejection, a 405) becomes the same JSON error body as every other error, so clients
/// and the OpenAPI document see one error shape.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let plain = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut out =
        ApiError { status, code, message, param: None, errors: Vec::new() }.into_response();
    for (name, value) in parts.headers.iter().filter(|(n, _)| {
        *n != axum::http::header::CONTENT_TYPE && *n != axum::http::header::CONTENT_LENGTH
    }) {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    /// Every code a handler of this crate (or a readiness check of the server) writes is
    /// in [`super::CODES`], so the docs page lists it.
    #[test]
    fn every_code_written_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut sources = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    sources.push(std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        let mut found = 0;
        for text in &sources {
            for piece in text.split("code: \"").skip(1) {
                let code: String = piece.chars().take_while(|c| *c != '"').collect();
                if code.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !code.is_empty() {
                    found += 1;
                    assert!(
                        super::CODES.iter().any(|(c, _, _)| *c == code),
                        "{code} is not in CODES"
                    );
                }
            }
        }
        assert!(found > 20, "only {found} codes found");
        for code in
            ["method_not_allowed", "payload_too_large", "unsupported_media_type", "bad_request"]
        {
            assert!(super::CODES.iter().any(|(c, _, _)| *c == code), "{code}");
        }
    }
}
