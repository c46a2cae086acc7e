//! What a failed AWS KMS call means for kmsd: retry later (`Unavailable`),
//! never (`Rejected`), or the key is gone (`NotFound`). The SDK's error for
//! each operation is reduced to one [`KmsFailure`] so the backend can treat
//! every operation alike.

use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::NAME;
use crate::backend::BackendError;
use crate::keys::Kid;

/// Whether a failure can pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Transient,
    Rejected,
    NotFound,
}

/// A failed KMS call: the operation, the AWS error code if KMS answered, and
/// what it means.
#[derive(Debug)]
pub struct KmsFailure {
    pub op: &'static str,
    pub code: Option<String>,
    pub class: Class,
    /// Everything the SDK says, for logs.
    pub detail: String,
    /// One line for a person: the code and message KMS answered, or the
    /// chain of causes when it did not answer.
    pub summary: String,
    /// Where the call went, when the caller said ([`KmsFailure::at`]).
    pub endpoint: Option<String>,
}

/// AWS error codes that a later retry may get past.
const TRANSIENT: &[&str] = &[
    "ThrottlingException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "InternalFailure",
];

impl KmsFailure {
    pub fn from_sdk<E>(op: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let detail = DisplayErrorContext(&err).to_string();
        let summary = match &err {
            SdkError::ServiceError(service) => match service.err().message() {
                Some(message) => format!("{}: {message}", service.err().code().unwrap_or("unknown error")),
                None => service.err().code().unwrap_or("unknown error").to_owned(),
            },
            other => cause_chain(other),
        };
        let (code, class) = match &err {
            SdkError::ServiceError(service) => {
                let code = service.err().code().map(str::to_owned);
                let status = service.raw().status().as_u16();
                let class = match code.as_deref() {
                    Some("NotFoundException") => Class::NotFound,
                    Some(c) if TRANSIENT.contains(&c) => Class::Transient,
                    _ if status == 429 || status >= 500 => Class::Transient,
                    _ => Class::Rejected,
                };
                (code, class)
            }
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                (None, Class::Transient)
            }
            // Not sent: the request could not be built (configuration).
            _ => (None, Class::Rejected),
        };
        Self { op, code, class, detail, summary, endpoint: None }
    }

    /// The same failure, naming the endpoint the call went to.
    pub fn at(mut self, endpoint: &str) -> Self {
        self.endpoint = Some(endpoint.to_owned());
        self
    }

    /// One line: the operation, the endpoint if known, and the summary.
    pub fn reason(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("{} at {endpoint}: {}", self.op, self.summary),
            None => format!("{}: {}", self.op, self.summary),
        }
    }

    /// A failure found by kmsd itself in what KMS answered.
    pub fn invalid_reply(op: &'static str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self { op, code: None, class: Class::Rejected, summary: detail.clone(), detail, endpoint: None }
    }

    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// The backend error, naming `kid` when the call was about a known key.
    /// It carries the one-line [`reason`](Self::reason); the SDK's full
    /// account (its debug dump of the connector error) goes to the debug log.
    pub fn into_backend(self, kid: Option<&Kid>) -> BackendError {
        tracing::debug!(op = self.op, error = %self.detail, "AWS KMS call failed");
        let reason = self.reason();
        match (self.class, kid) {
            (Class::Transient, _) => BackendError::Unavailable { backend: NAME, reason },
            (Class::NotFound, Some(kid)) => BackendError::NotFound { backend: NAME, kid: kid.clone() },
            (Class::Rejected | Class::NotFound, _) => BackendError::Rejected { backend: NAME, reason },
        }
    }
}

/// `err` and its sources as one line, `a: b: c`; a cause that its parent
/// already quotes is not repeated.
fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut causes: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !causes.last().is_some_and(|last| last.contains(&text)) {
            causes.push(text);
        }
        source = e.source();
    }
    causes.join(": ").replace(['\n', '\r'], " ")
}
