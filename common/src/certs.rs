//! The cluster's certificates (DESIGN.md, "mTLS").
//!
//! A role is named by the certificate's DNS subject alternative name,
//! `<role>.aifs`, which servers check after the handshake (an admin command
//! needs `admin.aifs`); an OSD's certificate also names its id,
//! `<id>.osd.aifs`, and the MDS takes heartbeats for that id alone. Every
//! certificate is valid for a bounded time (`DEFAULT_DAYS`) and is renewed
//! over the same key, so that its holder stays the same `Owner`.
//!
//! The CA (`Ca`) lives in a directory of its own, apart from the configs:
//! `ca.key`, `ca.pem`, and `issued/`, the record of every certificate it
//! signed (`Issued`), from which `mdsctl cert ls`, `renew` and `revoke`
//! work.
use crate::error::{Error, Result};
use crate::ids::{hex, unhex, Owner};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SignatureAlgorithm,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a certificate `mdsctl init` or `cert issue` signs is valid.
pub const DEFAULT_DAYS: u32 = 365;
/// How long the CA's own certificate is valid.
const CA_DAYS: u32 = 3650;
/// A certificate is valid from this long before it was signed, for clocks
/// a little behind the CA's.
const CLOCK_SLACK: Duration = Duration::from_secs(3600);

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

    pub fn parse(name: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.name() == name)
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

/// The second DNS name of OSD `id`'s certificate: the id it may claim.
pub fn osd_dns_name(id: u32) -> String {
    format!("{id}.osd.aifs")
}

/// The owner of a certificate (DER): the SHA-256 of its public key. `None`
/// if it does not parse.
pub fn owner_of(cert_der: &[u8]) -> Option<Owner> {
    let der = rustls::pki_types::CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    let spki = cert.subject_public_key_info();
    let mut h = [0u8; 32];
    h.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, spki.as_ref()).as_ref());
    Some(Owner(h))
}

/// The owner of the first certificate in a PEM file.
pub fn owner_of_pem(pem: &Path) -> Result<Owner> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(pem).map_err(|e| Error::InvalidArgument(format!("{}: {e}", pem.display())))?;
    owner_of(der.as_ref()).ok_or_else(|| Error::InvalidArgument(format!("{}: not a certificate", pem.display())))
}

fn cert_err(e: rcgen::Error) -> Error {
    Error::Io(format!("certificate generation: {e}"))
}

fn unix_now() -> Duration {
    Duration::from_millis(crate::cap::now_ms())
}

/// A certificate's time, `since` the epoch.
macro_rules! at {
    ($since:expr) => {
        rcgen::date_time_ymd(1970, 1, 1) + $since
    };
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
    f.sync_all()?;
    Ok(())
}

/// The DNS name that marks a client certificate whose root is squashed:
/// the MDS maps its uid and gid 0 to the anonymous ids (common/src/perm.rs).
pub const ROOT_SQUASH_DNS: &str = "root-squash.client.aifs";

/// What a certificate is for: a role, a node name (its files' stem), for
/// an OSD the id it may claim, and for a client whether its root is
/// squashed.
#[derive(Clone, Debug)]
pub struct Node {
    pub role: Role,
    pub name: String,
    pub osd: Option<u32>,
    pub root_squash: bool,
}

impl Node {
    pub fn new(role: Role, name: &str, osd: Option<u32>) -> Result<Node> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !ok {
            return Err(Error::InvalidArgument(format!("node name {name:?}: 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'")));
        }
        match (role, osd) {
            (Role::Osd, None) => Err(Error::InvalidArgument("an OSD certificate needs the OSD's id".into())),
            (Role::Osd, Some(0)) => Err(Error::InvalidArgument("OSD ids start at 1".into())),
            (Role::Osd, Some(_)) | (_, None) => Ok(Node { role, name: name.to_string(), osd, root_squash: false }),
            (_, Some(_)) => Err(Error::InvalidArgument("only an OSD certificate names an OSD id".into())),
        }
    }

    /// A client whose root is squashed by the MDS.
    pub fn root_squashed(self) -> Result<Node> {
        match self.role {
            Role::Client => Ok(Node { root_squash: true, ..self }),
            r => Err(Error::InvalidArgument(format!("root squash is for client certificates, not {}", r.name()))),
        }
    }

    fn dns_names(&self) -> Vec<String> {
        let mut v = vec![self.role.dns_name().to_string()];
        v.extend(self.osd.map(osd_dns_name));
        if self.root_squash {
            v.push(ROOT_SQUASH_DNS.to_string());
        }
        v
    }
}

/// A certificate the CA signed, as `issued/<name>.toml` records it.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct Issued {
    pub name: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub osd: Option<u32>,
    /// Valid until, in seconds since the epoch.
    pub not_after_s: u64,
    /// `owner_of` the certificate, 64 hex digits.
    pub owner: String,
    /// The raw public key (hex), to sign a renewal over.
    pub public_key: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub root_squash: bool,
}

impl Issued {
    pub fn owner(&self) -> Result<Owner> {
        self.owner.parse()
    }

    fn node(&self) -> Result<Node> {
        let role = Role::parse(&self.role).ok_or_else(|| Error::Io(format!("issued record {}: role {:?}", self.name, self.role)))?;
        let node = Node::new(role, &self.name, self.osd)?;
        match self.root_squash {
            true => node.root_squashed(),
            false => Ok(node),
        }
    }
}

/// The public key of a certificate being renewed (the CA never had its
/// private key once issued, or threw it away).
struct RecordedKey(Vec<u8>);

impl PublicKeyData for RecordedKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        // KeyPair::generate's algorithm, the only one the CA issues
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// The cluster's certificate authority, in a directory of its own.
pub struct Ca {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Make a new CA in `dir` (mode 0700). Refuses to replace one unless
    /// `force`.
    pub fn create(dir: &Path, force: bool) -> Result<Ca> {
        use std::os::unix::fs::PermissionsExt;
        if dir.join("ca.key").exists() && !force {
            return Err(Error::Exists);
        }
        std::fs::create_dir_all(dir.join("issued"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut p = ca_params()?;
        let now = unix_now();
        p.not_before = at!(now.saturating_sub(CLOCK_SLACK));
        p.not_after = at!(now + Duration::from_secs(u64::from(CA_DAYS) * 86_400));
        let cert = p.self_signed(&key).map_err(cert_err)?;
        std::fs::write(dir.join("ca.pem"), cert.pem())?;
        write_private(&dir.join("ca.key"), &key.serialize_pem())?;
        Ok(Ca { dir: dir.to_path_buf(), issuer: Issuer::new(ca_params()?, key) })
    }

    pub fn open(dir: &Path) -> Result<Ca> {
        let text = std::fs::read_to_string(dir.join("ca.key")).map_err(|e| Error::Io(format!("{}: {e}", dir.join("ca.key").display())))?;
        let key = KeyPair::from_pem(&text).map_err(cert_err)?;
        Ok(Ca { dir: dir.to_path_buf(), issuer: Issuer::new(ca_params()?, key) })
    }

    /// The CA's certificate, which every node trusts.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join("issued").join(format!("{name}.toml"))
    }

    /// Sign a new key for `node`, valid for `days`, into `out/<name>.pem`
    /// and `out/<name>.key`, and record it.
    pub fn issue(&self, node: &Node, out: &Path, days: u32) -> Result<Issued> {
        self.issue_until(node, out, unix_now() + Duration::from_secs(u64::from(days.max(1)) * 86_400))
    }

    /// `issue`, valid until `not_after` (since the epoch; in the past for a
    /// test of an expired certificate).
    pub fn issue_until(&self, node: &Node, out: &Path, not_after: Duration) -> Result<Issued> {
        let key = KeyPair::generate().map_err(cert_err)?;
        std::fs::create_dir_all(out)?;
        let rec = self.sign(node, &key, out, not_after)?;
        write_private(&out.join(format!("{}.key", node.name)), &key.serialize_pem())?;
        Ok(rec)
    }

    /// A new certificate over the key `name` was issued with, valid for
    /// `days` from now, into `out/<name>.pem`: its holder stays the same
    /// owner. The node needs it in place of its old one before that ends.
    pub fn renew(&self, name: &str, out: &Path, days: u32) -> Result<Issued> {
        let old = self.lookup(name)?;
        let key = RecordedKey(unhex(&old.public_key).ok_or_else(|| Error::Io(format!("issued record {name}: public key")))?);
        std::fs::create_dir_all(out)?;
        self.sign(&old.node()?, &key, out, unix_now() + Duration::from_secs(u64::from(days.max(1)) * 86_400))
    }

    fn sign(&self, node: &Node, key: &impl PublicKeyData, out: &Path, not_after: Duration) -> Result<Issued> {
        let mut p = CertificateParams::new(node.dns_names()).map_err(cert_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("aifs {} {}", node.role.name(), node.name));
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let from = unix_now().saturating_sub(CLOCK_SLACK).min(not_after.saturating_sub(Duration::from_secs(1)));
        p.not_before = at!(from);
        p.not_after = at!(not_after);
        let cert = p.signed_by(key, &self.issuer).map_err(cert_err)?;
        let owner = owner_of(cert.der()).ok_or_else(|| Error::Io("signed certificate does not parse".into()))?;
        let rec = Issued {
            name: node.name.clone(),
            role: node.role.name().to_string(),
            osd: node.osd,
            not_after_s: not_after.as_secs(),
            owner: owner.to_string(),
            public_key: hex(key.der_bytes()),
            root_squash: node.root_squash,
        };
        std::fs::write(out.join(format!("{}.pem", node.name)), cert.pem())?;
        let text = toml::to_string(&rec).map_err(|e| Error::Io(format!("issued record: {e}")))?;
        std::fs::write(self.record_path(&node.name), text)?;
        Ok(rec)
    }

    /// The record of the certificate last issued or renewed as `name`.
    pub fn lookup(&self, name: &str) -> Result<Issued> {
        Node::new(Role::Client, name, None)?;
        let path = self.record_path(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::InvalidArgument(format!("the CA in {} issued no certificate named {name:?}", self.dir.display())))
            }
            Err(e) => return Err(Error::Io(format!("{}: {e}", path.display()))),
        };
        toml::from_str(&text).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
    }

    /// Every certificate issued, by name.
    pub fn issued(&self) -> Result<Vec<Issued>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(self.dir.join("issued"))? {
            let p = e?.path();
            if let Some(name) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".toml")) {
                v.push(self.lookup(name)?);
            }
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }
}

/// A new cluster's CA in `ca_dir`, its certificate copied into
/// `config_dir`, and there a certificate for the MDS, the client, the admin
/// and each of OSDs 1..=`osds` (`osd<i>`). Refuses to replace a CA unless
/// `force`.
pub fn init_cluster(config_dir: &Path, ca_dir: &Path, osds: u32, force: bool) -> Result<Ca> {
    std::fs::create_dir_all(config_dir)?;
    let ca = Ca::create(ca_dir, force)?;
    std::fs::copy(ca.cert_path(), config_dir.join("ca.pem"))?;
    for role in [Role::Mds, Role::Client, Role::Admin] {
        ca.issue(&Node::new(role, role.name(), None)?, config_dir, DEFAULT_DAYS)?;
    }
    for i in 1..=osds {
        ca.issue(&Node::new(Role::Osd, &format!("osd{i}"), Some(i))?, config_dir, DEFAULT_DAYS)?;
    }
    Ok(ca)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_certificate_is_the_same_owner_and_lasts_longer() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(&dir.path().join("ca"), false).unwrap();
        let out = dir.path().join("out");
        let node = Node::new(Role::Client, "gpu1", None).unwrap();
        let first = ca.issue(&node, &out, 1).unwrap();
        let pem1 = std::fs::read(out.join("gpu1.pem")).unwrap();
        assert_eq!(owner_of_pem(&out.join("gpu1.pem")).unwrap().to_string(), first.owner);
        let renewed = ca.renew("gpu1", &out, 30).unwrap();
        assert_ne!(std::fs::read(out.join("gpu1.pem")).unwrap(), pem1, "renewal wrote the same certificate");
        assert_eq!(renewed.owner, first.owner);
        assert!(renewed.not_after_s > first.not_after_s + 20 * 86_400);
        assert_eq!(ca.lookup("gpu1").unwrap(), renewed);
        // another key is another owner
        let other = ca.issue(&Node::new(Role::Client, "gpu2", None).unwrap(), &out, 1).unwrap();
        assert_ne!(other.owner, first.owner);
        assert_eq!(ca.issued().unwrap().len(), 2);
    }

    #[test]
    fn node_names_and_osd_ids_are_checked() {
        assert!(Node::new(Role::Client, "../x", None).is_err());
        assert!(Node::new(Role::Client, "..", None).is_err());
        assert!(Node::new(Role::Client, &"a".repeat(65), None).is_err());
        assert!(Node::new(Role::Osd, "osd1", None).is_err());
        assert!(Node::new(Role::Osd, "osd0", Some(0)).is_err());
        assert!(Node::new(Role::Client, "c", Some(3)).is_err());
        assert_eq!(Node::new(Role::Osd, "osd3", Some(3)).unwrap().dns_names(), ["osd.aifs", "3.osd.aifs"]);
        let squashed = Node::new(Role::Client, "c", None).unwrap().root_squashed().unwrap();
        assert_eq!(squashed.dns_names(), ["client.aifs", ROOT_SQUASH_DNS]);
        assert!(Node::new(Role::Admin, "a", None).unwrap().root_squashed().is_err());
    }
}
