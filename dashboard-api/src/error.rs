//! The one place errors become HTTP responses: a status and a JSON body
//! `{"error": {"code": "...", "message": "...", "param": "..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

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
