//! The request being served, as the rest of kmsd may know it: its id, the
//! client's address and the credential acting for it. The http layer sets it
//! for the request's task ([`scope`]); the access log reads it, and the store
//! stamps every audit event committed on the request's behalf with the id and
//! the address (see [`crate::audit`]). Outside a request there is none:
//! background work (the rotation loop, timers) audits without a stamp.
//!
//! Nothing secret is held here: the actor is an API key id or an identity id,
//! never a key or a token.

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

#[derive(Debug)]
pub struct RequestContext {
    pub id: String,
    pub client: Option<IpAddr>,
    actor: OnceLock<String>,
}

impl RequestContext {
    pub fn new(id: String, client: Option<IpAddr>) -> Arc<Self> {
        Arc::new(Self { id, client, actor: OnceLock::new() })
    }

    /// The id of the API key or identity that authenticated, once one has.
    pub fn actor(&self) -> Option<&str> {
        self.actor.get().map(String::as_str)
    }
}

tokio::task_local! {
    static CURRENT: Arc<RequestContext>;
}

/// Runs `f` as the request `context`.
pub async fn scope<F: Future>(context: Arc<RequestContext>, f: F) -> F::Output {
    CURRENT.scope(context, f).await
}

/// The request being served by this task, if any.
pub fn current() -> Option<Arc<RequestContext>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Records who is acting for the current request (the first caller wins).
pub fn set_actor(id: &str) {
    if let Some(c) = current() {
        let _ = c.actor.set(id.to_owned());
    }
}
