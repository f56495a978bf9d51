//! The cluster's certificates (DESIGN.md, "mTLS"). `mdsctl init` makes a CA
//! and one certificate per role; a role is named by the certificate's DNS
//! subject alternative name, `<role>.aifs`, which servers check after the
//! handshake (an admin command needs `admin.aifs`).
use crate::error::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Mds,
    Osd,
    Client,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Mds, Role::Osd, Role::Client, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Mds => "mds",
            Role::Osd => "osd",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }

    /// The DNS name in the role's certificate; also the TLS server name a
    /// client asks for when it connects to an MDS or an OSD.
    pub fn dns_name(self) -> &'static str {
        match self {
            Role::Mds => "mds.aifs",
            Role::Osd => "osd.aifs",
            Role::Client => "client.aifs",
            Role::Admin => "admin.aifs",
        }
    }
}

fn cert_err(e: rcgen::Error) -> Error {
    Error::Io(format!("certificate generation: {e}"))
}

fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "aifs cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Create `ca.pem`/`ca.key` and `<role>.pem`/`<role>.key` for every role in
/// `dir`. Refuses to overwrite an existing CA unless `force`.
pub fn init_cluster(dir: &Path, force: bool) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    if dir.join("ca.pem").exists() && !force {
        return Err(Error::Exists);
    }
    let ca_key = KeyPair::generate().map_err(cert_err)?;
    let ca_cert = ca_params()?.self_signed(&ca_key).map_err(cert_err)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    write_private(&dir.join("ca.key"), &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    for role in Role::ALL {
        issue(dir, role, role.name(), &issuer)?;
    }
    Ok(())
}

/// A certificate of its own for one node in `role`, signed by the CA in
/// `ca_dir` (`ca.pem`, `ca.key`) and written to `out/<name>.pem/.key`: a
/// session opened under it answers to it alone.
pub fn issue_node(ca_dir: &Path, role: Role, name: &str, out: &Path) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') || name.len() > 64 {
        return Err(Error::InvalidArgument(format!("node name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'")));
    }
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca.key"))?).map_err(cert_err)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    std::fs::create_dir_all(out)?;
    issue_named(out, role, name, &format!("aifs {} {name}", role.name()), &issuer)
}

/// Sign a certificate for `role`, written as `<file_stem>.pem/.key`.
fn issue(dir: &Path, role: Role, file_stem: &str, issuer: &Issuer<'_, KeyPair>) -> Result<()> {
    issue_named(dir, role, file_stem, &format!("aifs {}", role.name()), issuer)
}

fn issue_named(dir: &Path, role: Role, file_stem: &str, common_name: &str, issuer: &Issuer<'_, KeyPair>) -> Result<()> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut p = CertificateParams::new(vec![role.dns_name().to_string()]).map_err(cert_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, issuer).map_err(cert_err)?;
    std::fs::write(dir.join(format!("{file_stem}.pem")), cert.pem())?;
    write_private(&dir.join(format!("{file_stem}.key")), &key.serialize_pem())?;
    Ok(())
}
