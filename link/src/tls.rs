//! rustls configurations for both ends of a node link. TLS 1.3 only, ring provider.
//!
//! A node verifies its hub by the pinned fingerprint of the hub's public key, or by a CA file
//! (a hub with a certificate from a public CA verifies like any HTTPS site). The hub asks every
//! peer for a client certificate but does not require one at the TLS layer: the node endpoint
//! requires an approved key, while browsers reach the console without one. The TLS handshake
//! itself proves the peer holds the private key of the certificate it shows.

use crate::identity::{Fingerprint, Identity, IdentityError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WantsClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ConfigBuilder, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;

/// How a node checks the hub it dials.
#[derive(Clone, Debug)]
pub enum ServerVerification {
    /// The hub's public key must have this fingerprint.
    Pin(Fingerprint),
    /// The hub's certificate must chain to one of these roots and name the host dialled.
    Ca(Vec<CertificateDer<'static>>),
}

/// The crypto provider every pointhub TLS configuration uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration: a protocol version, or a key not matching its certificate.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A certificate of the CA file could not be added as a trust root; holds the reason.
    #[error("CA file: {0}")]
    Ca(String),
    /// An identity or certificate could not be loaded or parsed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The configuration a node dials its hub with.
pub fn client_config(
    identity: &Identity,
    verify: &ServerVerification,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut config = verifying(verify)?
        .with_client_auth_cert(identity.certs.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A configuration without a client key (for tools that only talk to the hub's HTTP side, and for
/// tests of what the hub does with connections that have no key).
pub fn anonymous_client_config(
    verify: &ServerVerification,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut config = verifying(verify)?.with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TLS 1.3 with the hub checked as `verify` says; the client key is the caller's choice.
fn verifying(
    verify: &ServerVerification,
) -> Result<ConfigBuilder<rustls::ClientConfig, WantsClientCert>, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    Ok(match verify {
        ServerVerification::Pin(fp) => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedHub {
                    pin: *fp,
                    signatures: Signatures(provider),
                }))
        }
        ServerVerification::Ca(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots
                    .add(c.clone())
                    .map_err(|e| TlsError::Ca(e.to_string()))?;
            }
            builder.with_root_certificates(roots)
        }
    })
}

/// The hub's server configuration: its own identity, TLS 1.3 (1.2 too only if allowed), client
/// keys asked for.
pub fn server_config(
    identity: &Identity,
    allow_tls12: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] = if allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(Arc::new(AnyClientKey {
            signatures: Signatures(provider),
        }))
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The one place both verifiers check handshake signatures: with the provider's algorithms.
#[derive(Debug)]
struct Signatures(Arc<CryptoProvider>);

impl Signatures {
    fn tls12(
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

    fn tls13(
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

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A node's check of its hub by the pinned fingerprint of the hub's public key.
#[derive(Debug)]
struct PinnedHub {
    pin: Fingerprint,
    signatures: Signatures,
}

impl ServerCertVerifier for PinnedHub {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got =
            Fingerprint::of_cert(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "hub key fingerprint {got} does not match the pinned {}: this is not the hub you pinned \
                 (or its key was replaced); check hub.fingerprint in this node's config",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// Accepts any well-formed client certificate; the handshake signature still proves the peer
/// holds its key. Which keys may do what is decided by fingerprint after the handshake.
#[derive(Debug)]
struct AnyClientKey {
    signatures: Signatures,
}

impl ClientCertVerifier for AnyClientKey {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Fingerprint::of_cert(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}
