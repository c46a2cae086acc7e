//! systemd's readiness protocol (`Type=notify`): a datagram such as
//! `READY=1` to the unix socket named by `$NOTIFY_SOCKET`, when that is set.
//! A path starting with `@` names a socket in the abstract namespace. Sending
//! is best effort: a failure is logged at debug and never stops kmsd.

/// kmsd is listening and serving.
pub const READY: &str = "READY=1";
/// kmsd has begun its shutdown (draining).
pub const STOPPING: &str = "STOPPING=1";
/// kmsd is reloading its configuration (SIGHUP); `READY=1` follows.
pub const RELOADING: &str = "RELOADING=1";

/// Sends `state` to the service manager, if kmsd runs under one.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(e) = send(&path, state) {
        tracing::debug!(error = %e, state, "could not notify the service manager");
    }
}

#[cfg(unix)]
fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    match bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        _ => {
            socket.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn send(_: &std::ffi::OsStr, _: &str) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_datagram_reaches_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        super::send(path.as_os_str(), super::READY).unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
