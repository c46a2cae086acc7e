//! `GET /openapi.json` on both listeners: the OpenAPI 3.1 document of
//! `docs/openapi.json` (written by `scripts/openapi.py`), embedded at build
//! time. The unit tests keep its error-code enum equal to [`ErrorCode::ALL`];
//! `tests/api/openapi.rs` checks its paths against the served routes.

use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

/// The document, byte for byte as kept in the repository.
const DOCUMENT: &str = include_str!("../../docs/openapi.json");

pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(document))
}

async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::http::ErrorCode;

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).unwrap()
    }

    #[test]
    fn the_document_lists_every_error_code_in_table_order() {
        let listed: Vec<String> = doc()["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        let ours: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, ours, "docs/openapi.json is stale: run python3 scripts/openapi.py");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_both_security_schemes() {
        let d = doc();
        assert_eq!(d["openapi"], "3.1.0");
        let schemes = &d["components"]["securitySchemes"];
        assert_eq!(
            (&schemes["bearer"]["scheme"], &schemes["bearer"]["bearerFormat"]),
            (&"bearer".into(), &"JWT".into())
        );
        assert_eq!((&schemes["apiKey"]["in"], &schemes["apiKey"]["name"]), (&"header".into(), &"x-api-key".into()));
    }
}
