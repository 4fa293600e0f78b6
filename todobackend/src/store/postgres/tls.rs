//! TLS to PostgreSQL over rustls with the ring provider (already compiled
//! for the AWS SDK's HTTPS; no OpenSSL in a static `FROM scratch` binary).
//! A few lines of glue between tokio-rustls and tokio-postgres's `TlsConnect`
//! instead of the tokio-postgres-rustls crate, which pins its own rustls
//! features.
//!
//! `verify-full` and `verify-ca` check the server's certificate with
//! rustls's webpki verifier against the roots of the CA file (`verify-ca`
//! skips only the name). `require` and `prefer` mean what they mean in libpq
//! without a root certificate: the session is encrypted, the certificate is
//! not checked against a CA. The handshake's signatures are checked in every
//! mode, so the session is bound to the key of the certificate the server
//! presented, and the stream reports that certificate's hash for SCRAM's
//! channel binding (`SCRAM-SHA-256-PLUS`, RFC 5929 tls-server-end-point):
//! a relay that terminates TLS with a certificate of its own cannot pass an
//! authentication on to the real server, which checks the hash of its own.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::store::postgres::config::{CA_FILE_VAR, SslMode, Target};

/// Connects TLS for one connection to `server_name` (the URL's host).
pub struct Tls {
    config: Arc<ClientConfig>,
    server_name: String,
}

impl Tls {
    pub fn new(target: &Target) -> Result<Tls, String> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (&target.ca, target.sslmode) {
            (Some(ca), mode) if mode.verifies() => {
                let mut roots = RootCertStore::empty();
                for root in ca.roots.iter() {
                    roots.add(root.clone()).map_err(|e| format!("{CA_FILE_VAR}={}: {e}", ca.path))?;
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("{CA_FILE_VAR}={}: {e}", ca.path))?;
                if mode == SslMode::VerifyFull { webpki } else { Arc::new(AnyName(webpki)) }
            }
            // `Target::from_env` gives a CA file to every verifying mode.
            (None, mode) if mode.verifies() => return Err(format!("sslmode verifies but {CA_FILE_VAR} is unset")),
            _ => Arc::new(EncryptOnly { provider: Arc::clone(&provider) }),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Tls { config: Arc::new(config), server_name: target.host.clone() })
    }
}

/// `verify-ca`: the chain is checked, the name is not (libpq's meaning).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        // The webpki verifier checks the name last, after the chain.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(tokio_rustls::rustls::Error::InvalidCertificate(
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
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require`/`prefer`: the session key is the certificate's; the
/// certificate itself is not checked against a CA (see the module comment).
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// RFC 5929's tls-server-end-point: the hash of the server's certificate,
/// with the hash function of the certificate's signature algorithm, SHA-256
/// for one that uses MD5 or SHA-1. `None` for an algorithm the RFC does not
/// cover (Ed25519, RSA-PSS): PostgreSQL offers no binding for those either,
/// and `channel_binding=require` then refuses the server.
pub fn server_end_point(certificate: &[u8]) -> Option<Vec<u8>> {
    use ring::digest::{SHA256, SHA384, SHA512, digest};
    let algorithm = match signature_algorithm_oid(certificate)? {
        // md5WithRSA, sha1WithRSA, sha256WithRSA; ecdsa-with-SHA1, -SHA256.
        [42, 134, 72, 134, 247, 13, 1, 1, 4 | 5 | 11]
        | [42, 134, 72, 206, 61, 4, 1]
        | [42, 134, 72, 206, 61, 4, 3, 2] => &SHA256,
        [42, 134, 72, 134, 247, 13, 1, 1, 12] | [42, 134, 72, 206, 61, 4, 3, 3] => &SHA384,
        [42, 134, 72, 134, 247, 13, 1, 1, 13] | [42, 134, 72, 206, 61, 4, 3, 4] => &SHA512,
        _ => return None,
    };
    Some(digest(algorithm, certificate).as_ref().to_vec())
}

/// The OID's content bytes of a DER certificate's outer
/// `signatureAlgorithm` (`Certificate ::= SEQUENCE { tbsCertificate,
/// signatureAlgorithm AlgorithmIdentifier, signature }`): the one field
/// needed here, read without a full X.509 parser (webpki keeps its own
/// parse private).
fn signature_algorithm_oid(der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (certificate, _) = der_element(der, SEQUENCE)?;
    let (_tbs, rest) = der_element(certificate, SEQUENCE)?;
    let (algorithm, _) = der_element(rest, SEQUENCE)?;
    let (oid, _) = der_element(algorithm, OID)?;
    Some(oid)
}

/// One DER element of tag `tag` at the start of `input`: its content and
/// what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&length_byte, rest) = rest.split_first()?;
    let (length, rest) = if length_byte < 0x80 {
        (usize::from(length_byte), rest)
    } else {
        let count = usize::from(length_byte & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (length, &rest[count..])
    };
    (rest.len() >= length).then(|| rest.split_at(length))
}

/// The TLS stream handed to tokio-postgres.
pub struct Stream(tokio_rustls::client::TlsStream<TcpStream>);

impl TlsConnect<TcpStream> for Tls {
    type Stream = Stream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

    fn connect(self, stream: TcpStream) -> Self::Future {
        Box::pin(async move {
            let name = ServerName::try_from(self.server_name)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("TLS server name: {e}")))?;
            let connector = tokio_rustls::TlsConnector::from(self.config);
            connector.connect(name, stream).await.map(Stream)
        })
    }
}

impl TlsStream for Stream {
    fn channel_binding(&self) -> ChannelBinding {
        let certificate = self.0.get_ref().1.peer_certificates().and_then(|chain| chain.first());
        match certificate.and_then(|certificate| server_end_point(certificate)) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_rustls::rustls::pki_types::pem::PemObject;

    #[test]
    fn the_end_point_hash_follows_the_signature_algorithm() {
        // ecdsa-with-SHA256 (openssl's default for a P-256 key): SHA-256 of the DER.
        let root = CertificateDer::from_pem_slice(include_bytes!("../../../tests/data/test-root.pem")).unwrap();
        let hash = server_end_point(&root).unwrap();
        assert_eq!(hash, ring::digest::digest(&ring::digest::SHA256, &root).as_ref());
        // The same shape with other algorithm OIDs.
        let with_oid = |oid: &[u8]| {
            let mut algorithm = vec![0x06, oid.len() as u8];
            algorithm.extend_from_slice(oid);
            let mut inner = vec![0x30, 0x01, 0x00, 0x30, algorithm.len() as u8];
            inner.extend(algorithm);
            inner.extend([0x03, 0x01, 0x00]);
            let mut der = vec![0x30, inner.len() as u8];
            der.extend(inner);
            der
        };
        let sha384_rsa = with_oid(&[42, 134, 72, 134, 247, 13, 1, 1, 12]);
        assert_eq!(server_end_point(&sha384_rsa).unwrap().len(), 48);
        let sha512_ecdsa = with_oid(&[42, 134, 72, 206, 61, 4, 3, 4]);
        assert_eq!(server_end_point(&sha512_ecdsa).unwrap().len(), 64);
        let sha1_rsa = with_oid(&[42, 134, 72, 134, 247, 13, 1, 1, 5]);
        assert_eq!(server_end_point(&sha1_rsa).unwrap().len(), 32);
        let ed25519 = with_oid(&[43, 101, 112]);
        assert_eq!(server_end_point(&ed25519), None);
        assert_eq!(server_end_point(&[0x30, 0x83, 0x01]), None);
        assert_eq!(server_end_point(b""), None);
    }
}
