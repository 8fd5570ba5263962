//! The endpoint's error answers: [`ApiError`] (a status code and a JSON
//! body `{"error": ..., "status": ..., ...}`), the [`Json`] body extractor
//! that names the field a body fails on, and the text of refusals made by
//! actix-web itself (unknown route, wrong method, body too large).

use std::future::Future;
use std::pin::Pin;

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceResponse};
use actix_web::error::{JsonPayloadError, PayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// An error answer: a status code and a JSON object with at least `error`
/// (what went wrong, for a person) and `status` (the code).
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    body: Map<String, Value>,
    retry_after: Option<u32>,
}

impl ApiError {
    /// `status` with `{"error": message}`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(message.into()));
        body.insert("status".into(), Value::from(status.as_u16()));
        Self {
            status,
            body,
            retry_after: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 503 Service Unavailable (an application's actor does not answer).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// Adds the header `Retry-After: <seconds>` (for a 503 whose request
    /// can be sent again).
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Adds `key: value` to the body (`error` and `status` stay as they are).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        if key != "error" && key != "status" {
            self.body.insert(key.to_string(), value.into());
        }
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `error` text.
    pub fn message(&self) -> &str {
        self.body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The response: this status and body, plus `WWW-Authenticate: Bearer`
    /// on a 401 and `Retry-After` when set.
    pub(crate) fn error_response_json(&self) -> HttpResponse<BoxBody> {
        let mut res = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        res.json(&self.body)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message(), self.status)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse<BoxBody> {
        self.error_response_json()
    }
}

/// A JSON request body of type `T`, like `web::Json<T>`, but a body that
/// does not deserialize gets a 400 naming the field (`"field": "amount"`,
/// its path for nested ones: `"items[2].name"`). The body must come with
/// `Content-Type: application/json` (415 otherwise: this also keeps web
/// pages from posting to the endpoint with plain forms) and be at most
/// `[http] max_body_bytes` long (413).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_type);
        // The `Bytes` extractor enforces the app's `PayloadConfig` limit.
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !json {
                return Err(wrong_content_type().into());
            }
            let body = body.await?;
            parse_json(&body).map(Json).map_err(Into::into)
        })
    }
}

fn is_json_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn wrong_content_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a JSON body needs the header `Content-Type: application/json`",
    )
}

/// `body` as a `T`, or a 400 naming the field it fails on.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        body_error(e.into_inner(), field)
    })?;
    de.end().map_err(|e| body_error(e, None))?;
    Ok(value)
}

/// A 400 for a body serde_json refused. `field` is where it failed; when
/// unknown, the field named in serde's message (`missing field `amount``).
fn body_error(e: serde_json::Error, field: Option<String>) -> ApiError {
    let field = field.or_else(|| field_in_message(&e.to_string()));
    let what = if e.is_syntax() || e.is_eof() {
        "the request body is not valid JSON"
    } else {
        "the request body does not fit"
    };
    let message = match &field {
        Some(f) => format!("{what}: field `{f}`: {e}"),
        None => format!("{what}: {e}"),
    };
    let err = ApiError::bad_request(message)
        .with("line", e.line())
        .with("column", e.column());
    match field {
        Some(f) => err.with("field", f),
        None => err,
    }
}

/// The name between the first pair of backticks, as in serde's
/// "missing field `amount`" or "unknown field `amout`, expected ...".
fn field_in_message(message: &str) -> Option<String> {
    let rest = message.split_once("field `")?.1;
    Some(rest.split_once('`')?.0.to_string())
}

/// The `web::Json` settings for applications that use it rather than
/// [`Json`]: the same limit and the same error answers (serde_json names
/// missing and unknown fields, and gives the line and column of others).
pub(crate) fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |e, _req| {
            match e {
                JsonPayloadError::Deserialize(e) => body_error(e, None),
                JsonPayloadError::ContentType => wrong_content_type(),
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => too_large(limit),
                other => ApiError::bad_request(format!("cannot read the request body: {other}")),
            }
            .into()
        })
}

/// How a query string that does not parse is refused: 400, quoting it.
pub(crate) fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|e, req| {
        let detail = match e {
            actix_web::error::QueryPayloadError::Deserialize(e) => e.to_string(),
            other => other.to_string(),
        };
        ApiError::bad_request(format!("query string {:?}: {detail}", req.query_string())).into()
    })
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than the node's limit of {limit} bytes ([http] max_body_bytes)"),
    )
    .with("limit_bytes", limit)
}

/// The JSON error for a refusal whose body is not JSON (made by actix-web:
/// unknown route, wrong method, payload errors; or by an application).
pub(crate) fn describe(res: &ServiceResponse<BoxBody>, limit: usize) -> ApiError {
    let req = res.request();
    let (method, path) = (req.method().to_string(), req.path().to_string());
    let status = res.status();
    match status {
        StatusCode::NOT_FOUND => {
            ApiError::new(status, format!("no route for {method} {path}")).with("path", path)
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::new(status, format!("{path} does not take {method}"))
                .with("path", path)
                .with("method", method)
        }
        StatusCode::PAYLOAD_TOO_LARGE => too_large(limit),
        _ => {
            let detail = match res.response().error() {
                Some(e) => match e.as_error::<PayloadError>() {
                    Some(PayloadError::Overflow) => return too_large(limit),
                    _ => e.to_string(),
                },
                None => status
                    .canonical_reason()
                    .unwrap_or("request refused")
                    .to_string(),
            };
            ApiError::new(status, detail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        amount: i64,
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        name: String,
    }

    fn field_of(body: &str) -> (Option<String>, String) {
        let e = parse_json::<Body>(body.as_bytes()).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let field = e
            .body
            .get("field")
            .and_then(Value::as_str)
            .map(String::from);
        (field, e.message().to_string())
    }

    #[test]
    fn a_body_that_does_not_fit_names_the_field() {
        for (body, field) in [
            (r#"{"amount": "x", "items": []}"#, "amount"),
            (r#"{"items": []}"#, "amount"),
            (r#"{"amount": 1, "items": [], "amout": 2}"#, "amout"),
            (
                r#"{"amount": 1, "items": [{"name": "a"}, {"name": 3}]}"#,
                "items[1].name",
            ),
        ] {
            let (got, message) = field_of(body);
            assert_eq!(got.as_deref(), Some(field), "{body}: {message}");
            assert!(message.contains(&format!("`{field}`")), "{message}");
        }
    }

    #[test]
    fn a_body_that_is_not_json_says_so() {
        for body in ["{", "nope", r#"{"amount": 1, "items": []} trailing"#, ""] {
            let (_, message) = field_of(body);
            assert!(message.contains("not valid JSON"), "{body:?}: {message}");
        }
        assert!(parse_json::<Body>(br#"{"amount": 1, "items": [{"name": "a"}]}"#).is_ok());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_type("application/json"));
        assert!(is_json_type("Application/JSON; charset=utf-8"));
        assert!(is_json_type("application/merge-patch+json"));
        assert!(!is_json_type("text/plain"));
        assert!(!is_json_type("application/x-www-form-urlencoded"));
    }
}
