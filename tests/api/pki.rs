//! A throwaway PKI for the TLS tests, made with the openssl CLI: CAs, server
//! certificates for 127.0.0.1 and localhost, client certificates, all P-256
//! and valid for two days. And the test side's TLS clients (rustls with the
//! aws-lc-rs provider, as the daemon uses, configured here independently).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub struct Pki {
    pub dir: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run openssl ({e}): install the openssl CLI (Debian: apt-get install openssl)")
    });
    assert!(out.status.success(), "openssl {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

impl Pki {
    pub fn new(parent: &Path) -> Pki {
        let dir = parent.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        Pki { dir }
    }

    /// A self-signed CA `name`: `name.pem` (and its key `name.key`).
    pub fn ca(&self, name: &str) -> PathBuf {
        let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
        openssl(
            &self.dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &cert,
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        self.dir.join(cert)
    }

    /// A server certificate for 127.0.0.1 and localhost, issued by `ca`.
    pub fn server(&self, ca: &str, name: &str) -> Leaf {
        self.leaf(ca, name, "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    }

    /// A client certificate, issued by `ca`.
    pub fn client(&self, ca: &str, name: &str) -> Leaf {
        self.leaf(ca, name, "extendedKeyUsage=clientAuth\n")
    }

    fn leaf(&self, ca: &str, name: &str, extensions: &str) -> Leaf {
        let ext = format!("{name}.ext");
        std::fs::write(self.dir.join(&ext), format!("basicConstraints=CA:FALSE\n{extensions}")).unwrap();
        let (key, csr, cert) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        let serial = format!("0x{:x}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos());
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
        Leaf { cert: self.dir.join(cert), key: self.dir.join(key) }
    }
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path).unwrap().map(Result::unwrap).collect()
}

/// The DER of the first certificate in a PEM file.
pub fn der(path: &Path) -> Vec<u8> {
    certs(path).remove(0).as_ref().to_vec()
}

/// A rustls client trusting only `ca`, presenting `identity` if given.
pub fn client_config(ca: &Path, identity: Option<&Leaf>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca) {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => {
            builder.with_client_auth_cert(certs(&leaf.cert), PrivateKeyDer::from_pem_file(&leaf.key).unwrap()).unwrap()
        }
    }
}

/// An HTTPS client over [`client_config`], one connection per request.
pub fn https(ca: &Path, identity: Option<&Leaf>) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .use_preconfigured_tls(client_config(ca, identity))
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Handshakes with `addr` (host:port) trusting `ca`; the DER of the
/// certificate the server presented, or the handshake's error.
pub async fn served_certificate(addr: &str, ca: &Path) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca, None)));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    Ok(conn.peer_certificates().unwrap()[0].as_ref().to_vec())
}

/// `url` without its scheme.
pub fn host(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest)
}
