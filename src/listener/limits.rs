//! What the listeners are held to: timeouts, the in-flight bound and the
//! connection caps. `config` reads them from `[http]` and `[listen]`.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From accepting a connection, or from the first byte of a later
    /// request on it, until its request head is complete.
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request on it is closed after this.
    pub idle_timeout: Duration,
    /// From the request head to the response: 408 while the client is still
    /// sending the body, 503 otherwise.
    pub request_timeout: Duration,
    /// After SIGTERM, connections have this long to finish; then they are closed.
    pub drain_timeout: Duration,
    /// Requests served at once, per listener; beyond it 503 `overloaded`.
    pub max_in_flight: usize,
    /// `None`: derived from the file-descriptor limit.
    pub public_max_connections: Option<usize>,
    pub admin_max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            public_max_connections: None,
            admin_max_connections: 256,
        }
    }
}
