//! rustls configurations for mutual TLS. Every server demands a client
//! certificate signed by the cluster CA; every client checks the server's
//! certificate against the same CA and the role's DNS name.
use crate::certs::Role;
use crate::config::TlsConfig;
use super::gate::Gate;
use crate::error::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use std::sync::Arc;

/// ALPN protocol id; bumped when the wire format changes incompatibly.
pub const ALPN: &[u8] = b"aifs/10";

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("TLS setup: {e}"))
}

/// A process's TLS identity: the CA it trusts and its own chain and key.
pub struct Identity {
    roots: Arc<rustls::RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity { roots: self.roots.clone(), chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl Identity {
    pub fn load(cfg: &TlsConfig) -> Result<Identity> {
        let read_certs = |p: &std::path::Path| -> Result<Vec<CertificateDer<'static>>> {
            let certs = CertificateDer::pem_file_iter(p)
                .map_err(|e| tls_err(format!("{}: {e}", p.display())))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| tls_err(format!("{}: {e}", p.display())))?;
            if certs.is_empty() {
                return Err(tls_err(format!("{}: no certificate", p.display())));
            }
            Ok(certs)
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(&cfg.ca)? {
            roots.add(c).map_err(tls_err)?;
        }
        let chain = read_certs(&cfg.cert)?;
        let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| tls_err(format!("{}: {e}", cfg.key.display())))?;
        Ok(Identity { roots: Arc::new(roots), chain, key })
    }

    /// ring, with AES-128-GCM first: every byte of object data is sealed
    /// and opened once each way, and 10 AES rounds instead of AES-256's 14
    /// cost less per byte (`make bench`, README "Tuning"). The other TLS
    /// 1.3 suites stay for peers that do not offer it.
    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        use rustls::crypto::ring::cipher_suite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256};
        let mut p = rustls::crypto::ring::default_provider();
        p.cipher_suites = vec![TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256];
        Arc::new(p)
    }

    /// A server's side: a client must show a certificate the CA signed,
    /// still valid, and not revoked in `gate`.
    pub fn server_crypto(&self, gate: Arc<Gate>) -> Result<quinn::crypto::rustls::QuicServerConfig> {
        let provider = Self::provider();
        let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
            .build()
            .map_err(tls_err)?;
        let verifier = Arc::new(Unrevoked { inner, gate });
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        quinn::crypto::rustls::QuicServerConfig::try_from(cfg).map_err(tls_err)
    }

    /// A secret that stays the same across restarts of this server, made
    /// from its private key (rpc/endpoint.rs, `endpoint_config`).
    pub fn restart_secret(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"aifs stateless reset key\0");
        ctx.update(self.key.secret_der());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    pub fn client_crypto(&self) -> Result<quinn::crypto::rustls::QuicClientConfig> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(tls_err)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        quinn::crypto::rustls::QuicClientConfig::try_from(cfg).map_err(tls_err)
    }
}

/// The client certificate verifier of every server: the CA's, and then the
/// revocation list.
#[derive(Debug)]
struct Unrevoked {
    inner: Arc<dyn ClientCertVerifier>,
    gate: Arc<Gate>,
}

impl ClientCertVerifier for Unrevoked {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        match crate::certs::owner_of(end_entity.as_ref()) {
            Some(o) if !self.gate.is_revoked(&o) => Ok(ok),
            Some(o) => {
                tracing::warn!(owner = %o, "revoked certificate refused");
                Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked))
            }
            None => Err(rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The leaf certificate a connected peer showed (verified by the handshake).
fn peer_leaf(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let id = conn.peer_identity()?;
    let certs = id.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().cloned()
}

/// Who the peer is (`certs::owner_of` its certificate; all zeros if it
/// showed none, which the handshake does not let happen).
pub fn peer_owner(conn: &quinn::Connection) -> crate::ids::Owner {
    peer_leaf(conn).and_then(|der| crate::certs::owner_of(der.as_ref())).unwrap_or_default()
}

/// Which of `names` the peer's certificate carries as DNS names (parsed
/// once for all of them).
fn peer_names<'n>(conn: &quinn::Connection, names: impl IntoIterator<Item = &'n str>) -> Vec<&'n str> {
    let Some(leaf) = peer_leaf(conn) else { return Vec::new() };
    let Ok(cert) = webpki::EndEntityCert::try_from(&leaf) else { return Vec::new() };
    names
        .into_iter()
        .filter(|n| ServerName::try_from(*n).is_ok_and(|sn| cert.verify_is_valid_for_subject_name(&sn).is_ok()))
        .collect()
}

/// The role a connected peer proved with its certificate (already verified
/// against the CA by the handshake).
pub fn peer_role(conn: &quinn::Connection) -> Option<Role> {
    let found = peer_names(conn, Role::ALL.map(Role::dns_name));
    Role::ALL.into_iter().find(|r| found.contains(&r.dns_name()))
}

/// Whether the peer's certificate marks a client whose root is squashed.
pub fn peer_root_squashed(conn: &quinn::Connection) -> bool {
    !peer_names(conn, [crate::certs::ROOT_SQUASH_DNS]).is_empty()
}

/// Whether the peer's certificate is OSD `id`'s.
pub fn peer_is_osd(conn: &quinn::Connection, id: u32) -> bool {
    !peer_names(conn, [crate::certs::osd_dns_name(id).as_str()]).is_empty()
}
