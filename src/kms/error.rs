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
            other => {
                let mut causes = vec![other.to_string()];
                let mut source = std::error::Error::source(other);
                while let Some(e) = source {
                    causes.push(e.to_string());
                    source = e.source();
                }
                causes.join(": ")
            }
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
        Self { op, code, class, detail, summary }
    }

    /// A failure found by kmsd itself in what KMS answered.
    pub fn invalid_reply(op: &'static str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self { op, code: None, class: Class::Rejected, summary: detail.clone(), detail }
    }

    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// The backend error, naming `kid` when the call was about a known key.
    pub fn into_backend(self, kid: Option<&Kid>) -> BackendError {
        let reason = format!("{}: {}", self.op, self.detail);
        match (self.class, kid) {
            (Class::Transient, _) => BackendError::Unavailable { backend: NAME, reason },
            (Class::NotFound, Some(kid)) => BackendError::NotFound { backend: NAME, kid: kid.clone() },
            (Class::Rejected | Class::NotFound, _) => BackendError::Rejected { backend: NAME, reason },
        }
    }
}
