//! rustls configurations for mutual TLS. Every server demands a client
//! certificate signed by the cluster CA; every client checks the server's
//! certificate against the same CA and the role's DNS name.
use crate::certs::Role;
use crate::config::TlsConfig;
use crate::error::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;

/// ALPN protocol id; bumped when the wire format changes incompatibly.
pub const ALPN: &[u8] = b"aifs/3";

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

    pub fn server_crypto(&self) -> Result<quinn::crypto::rustls::QuicServerConfig> {
        let provider = Self::provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
            .build()
            .map_err(tls_err)?;
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

/// The role a connected peer proved with its certificate (already verified
/// against the CA by the handshake).
/// The hash of the peer's certificate (all zeros if it showed none, which
/// the handshake does not let happen).
pub fn peer_owner(conn: &quinn::Connection) -> crate::ids::Owner {
    let leaf = conn.peer_identity().and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok()).and_then(|c| c.first().cloned());
    match leaf {
        Some(der) => {
            let mut h = [0u8; 32];
            h.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der.as_ref()).as_ref());
            crate::ids::Owner(h)
        }
        None => crate::ids::Owner::default(),
    }
}

pub fn peer_role(conn: &quinn::Connection) -> Option<Role> {
    let id = conn.peer_identity()?;
    let certs = id.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let leaf = certs.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    Role::ALL.into_iter().find(|r| {
        ServerName::try_from(r.dns_name())
            .map(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
            .unwrap_or(false)
    })
}
