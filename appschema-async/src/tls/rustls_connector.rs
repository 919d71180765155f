//! The built-in TLS connector (feature `tls-rustls`): rustls with the
//! `ring` provider, verifying the server as libpq does for the URL's
//! `sslmode` and `sslrootcert`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

use super::SslMode;

/// A tokio-postgres TLS connector on rustls (`ring` provider), for the
/// async pools' connections and cancel requests.
///
/// The pools make one themselves from the URL's `sslmode` and
/// `sslrootcert` when the `tls-rustls` feature is on; build one with
/// [`RustlsConnector::new`] from a rustls [`ClientConfig`] of your own
/// (client certificates, other roots) and hand it to a builder's `.tls(…)`.
///
/// ```no_run
/// use std::sync::Arc;
/// use appschema::async_pool::{AsyncSharedPool, RustlsConnector};
///
/// # fn run(roots: rustls::RootCertStore) -> Result<(), Box<dyn std::error::Error>> {
/// # #[allow(deprecated)]
/// let provider = Arc::new(rustls::crypto::ring::default_provider());
/// let config = rustls::ClientConfig::builder_with_provider(provider)
/// .with_safe_default_protocol_versions()?
/// .with_root_certificates(roots)
/// .with_no_client_auth();
/// let pool = AsyncSharedPool::builder("postgres://app@db.example.com/app?sslmode=require")
///     .tls(RustlsConnector::new(config))
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RustlsConnector {
    config: Arc<ClientConfig>,
    /// How errors describe what was verified against what.
    context: Arc<str>,
}

impl fmt::Debug for RustlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustlsConnector")
            .field("verifies", &self.context)
            .finish_non_exhaustive()
    }
}

impl RustlsConnector {
    /// A connector that verifies the server as `config` says.
    pub fn new(config: ClientConfig) -> RustlsConnector {
        RustlsConnector {
            config: Arc::new(config),
            context: Arc::from("a caller-supplied rustls configuration"),
        }
    }

    /// The connector libpq's `sslmode` and `sslrootcert` describe:
    /// `verify-full` checks the chain against the roots and the host name;
    /// `verify-ca` the chain only; `require` and `prefer` verify nothing
    /// unless a root certificate is given (or `~/.postgresql/root.crt`
    /// exists), when they verify the chain as `verify-ca` does.
    pub(crate) fn for_url(mode: SslMode, root_cert: Option<&str>) -> Result<Self, String> {
        // `ring`, deprecated since rustls 0.23.48 only for lacking
        // post-quantum key exchange (X25519 is used instead), builds
        // without CMake or NASM, unlike aws-lc-rs.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        if root_cert == Some("system") && mode != SslMode::VerifyFull {
            return Err(format!(
                "sslrootcert=system with sslmode={mode}: the system's roots are only used with \
                 sslmode=verify-full (as in libpq); use sslmode=verify-full"
            ));
        }
        let roots = match root_cert {
            Some("system") => Some(("the system's roots".to_string(), system_roots()?)),
            Some(path) => Some((format!("sslrootcert {path}"), file_roots(Path::new(path))?)),
            None => match default_root_file() {
                Some(path) => {
                    let roots = file_roots(&path)?;
                    Some((format!("{}", path.display()), roots))
                }
                None => None,
            },
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(format!(
                    "sslmode={mode} needs the certificate of the CA that signed the server's: \
                     add sslrootcert=/path/to/ca.pem to the connection URL (or \
                     sslrootcert=system for the system's roots, with verify-full); there is no \
                     ~/.postgresql/root.crt either"
                ))
            }
            (_, Some((source, roots))) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| format!("cannot use the roots of {source}: {e}"))?;
                let context = format!("sslmode={mode}, roots from {source}");
                if mode == SslMode::VerifyFull {
                    return Self::with_verifier(provider, webpki, context);
                }
                return Self::with_verifier(provider, Arc::new(ChainOnly(webpki)), context);
            }
            (_, None) => Arc::new(Unverified(Arc::clone(&provider))),
        };
        Self::with_verifier(
            provider,
            verifier,
            format!("sslmode={mode}, server certificate not verified"),
        )
    }

    fn with_verifier(
        provider: Arc<CryptoProvider>,
        verifier: Arc<dyn ServerCertVerifier>,
        context: String,
    ) -> Result<Self, String> {
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(RustlsConnector {
            config: Arc::new(config),
            context: Arc::from(context),
        })
    }
}

fn file_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
        roots.add(cert).map_err(|e| {
            format!(
                "sslrootcert {} holds a certificate rustls cannot use: {e}",
                path.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "sslrootcert {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(format!(
            "sslrootcert=system, but no root certificate was found in the system's store \
             ({:?}): install the CA certificates (ca-certificates) or name a file in sslrootcert",
            found.errors
        ));
    }
    Ok(roots)
}

/// libpq's default root file, when it exists.
fn default_root_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql/root.crt");
    path.is_file().then_some(path)
}

/// `verify-ca`: the chain is checked against the roots, the host name not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the name after the chain: a name mismatch means
        // the chain was sound.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` and `prefer` with no root certificate (as libpq): encrypted,
/// the server's certificate not checked; the handshake's signatures are.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl MakeTlsConnect<Socket> for RustlsConnector {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        // tokio-postgres asks before it knows whether TLS will be used (a
        // unix socket has no host name, and the server will say no): a bad
        // name fails the handshake, if there is one.
        Ok(RustlsConnect {
            config: Arc::clone(&self.config),
            context: Arc::clone(&self.context),
            host: domain.to_string(),
        })
    }
}

/// One handshake of a [`RustlsConnector`] (tokio-postgres's `TlsConnect`).
#[derive(Debug)]
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    context: Arc<str>,
    host: String,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<RustlsStream>>;

    fn connect(self, stream: Socket) -> Self::Future {
        async move {
            let name = ServerName::try_from(self.host.clone()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{}` is not a host name TLS can verify: {e}", self.host),
                )
            })?;
            tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await
                .map(RustlsStream)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "TLS handshake with `{}` failed: {e} ({})",
                            self.host, self.context
                        ),
                    )
                })
        }
        .boxed()
    }
}

/// A TLS session of a [`RustlsConnector`] (tokio-postgres's `TlsStream`).
#[derive(Debug)]
pub struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for RustlsStream {
    /// `tls-server-end-point` (RFC 5929), as PostgreSQL computes it: the
    /// server certificate hashed with its signature's hash (SHA-256 for
    /// MD5 and SHA-1). None for a signature without one hash (Ed25519,
    /// RSA-PSS): SCRAM then runs without channel binding.
    fn channel_binding(&self) -> ChannelBinding {
        let cert = self
            .0
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        match cert.and_then(|cert| server_end_point(cert)) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// The `tls-server-end-point` hash of a DER certificate, for the signature
/// algorithms whose hash is defined.
fn server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm
    // AlgorithmIdentifier ::= SEQUENCE { algorithm OID, … }, signature }
    let (certificate, _) = der(cert, 0x30)?;
    let (_, rest) = der_any(certificate)?;
    let (algorithm, _) = der(rest, 0x30)?;
    let (oid, _) = der(algorithm, 0x06)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let hash = match oid.split_last() {
        // md5, sha1, sha256 with RSA; sha384, sha512 with RSA.
        Some((4 | 5 | 11, head)) if head == RSA => &ring::digest::SHA256,
        Some((12, head)) if head == RSA => &ring::digest::SHA384,
        Some((13, head)) if head == RSA => &ring::digest::SHA512,
        // ecdsa-with-SHA1 (…4.1), ecdsa-with-SHA256/384/512 (…4.3.2/3/4).
        Some((1, head)) if head == ECDSA => &ring::digest::SHA256,
        Some((2, head)) if head.strip_suffix(&[3]) == Some(ECDSA) => &ring::digest::SHA256,
        Some((3, head)) if head.strip_suffix(&[3]) == Some(ECDSA) => &ring::digest::SHA384,
        Some((4, head)) if head.strip_suffix(&[3]) == Some(ECDSA) => &ring::digest::SHA512,
        _ => return None,
    };
    Some(ring::digest::digest(hash, cert).as_ref().to_vec())
}

/// The contents of the DER element at the start of `input` if its tag is
/// `tag`, and what follows it.
fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    (*input.first()? == tag).then_some(())?;
    der_any(input)
}

fn der_any(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        (
            bytes
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b)),
            2 + n,
        )
    };
    let end = header.checked_add(len)?;
    Some((input.get(header..end)?, input.get(end..)?))
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
