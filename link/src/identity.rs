//! Node identities: a key pair made on the node, a self-signed certificate around it, and the
//! SHA-256 fingerprint of its public key by which the hub knows the node.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// SHA-256 of a certificate's SubjectPublicKeyInfo (DER). Printed `sha256:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

/// Why an identity or a fingerprint could not be made, read, written or parsed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// The identity's folder could not be made, or its certificate or key file not written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The folder or file that could not be made or written.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// A certificate file holds no `CERTIFICATE` block, or a block that is not valid PEM.
    #[error("{path} holds no PEM certificate ({detail})")]
    NoCert {
        /// The file concerned.
        path: PathBuf,
        /// What the lower layer reported.
        detail: String,
    },
    /// A key file holds no PEM private key, or one that is not valid PEM.
    #[error("{path} holds no PEM private key ({detail})")]
    NoKey {
        /// The file concerned.
        path: PathBuf,
        /// What the lower layer reported.
        detail: String,
    },
    /// A certificate's DER does not parse as X.509, so no fingerprint can be taken from it.
    #[error("not a valid X.509 certificate: {0}")]
    BadCert(String),
    /// Making a new key pair or self-signed certificate failed (`generate`, `create`).
    #[error("cannot make a key or certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Text parsed as a fingerprint is not `sha256:` and 64 hex digits; holds its first 100 chars.
    #[error("{0:?} is not a fingerprint: write sha256: followed by 64 hex digits")]
    BadFingerprint(String),
    /// `create` found a key file at `path` already; a key is never overwritten.
    #[error("{path} already exists: pick another folder or remove it first (a key is never overwritten)")]
    Exists {
        /// The file concerned.
        path: PathBuf,
    },
}

impl Fingerprint {
    /// The fingerprint of the public key inside a DER certificate.
    pub fn of_cert(der: &[u8]) -> Result<Fingerprint, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::BadCert(e.to_string()))?;
        Ok(Fingerprint::of_spki(cert.public_key().raw))
    }

    /// The fingerprint of a DER SubjectPublicKeyInfo.
    pub fn of_spki(spki: &[u8]) -> Fingerprint {
        let d = ring::digest::digest(&ring::digest::SHA256, spki);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Fingerprint(out)
    }

    /// The fingerprint as 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = IdentityError;
    /// Accepts `sha256:<hex>`, bare hex, and hex with `:` between bytes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdentityError::BadFingerprint(s.chars().take(100).collect());
        let t = s.trim();
        let t = t
            .strip_prefix("sha256:")
            .or_else(|| t.strip_prefix("SHA256:"))
            .unwrap_or(t);
        let hex: String = t.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A loaded identity: certificate chain, private key and fingerprint.
#[derive(Debug)]
pub struct Identity {
    /// The certificate chain from the certificate file, the node's own certificate first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The private key of the first certificate.
    pub key: PrivateKeyDer<'static>,
    /// The fingerprint of the first certificate's public key.
    pub fingerprint: Fingerprint,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
            fingerprint: self.fingerprint,
        }
    }
}

/// The PEM texts of a new identity.
pub struct NewIdentity {
    /// The self-signed certificate, PEM (what `create` writes to `<stem>.crt`).
    pub cert_pem: String,
    /// The private key, PEM (what `create` writes to `<stem>.key`, readable by its owner only).
    pub key_pem: String,
    /// The fingerprint of the new certificate's public key.
    pub fingerprint: Fingerprint,
}

/// Makes a new ECDSA P-256 key pair and a self-signed certificate for `name`, valid for `sans`.
pub fn generate(name: &str, sans: &[String]) -> Result<NewIdentity, IdentityError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(sans.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key)?;
    let fingerprint = Fingerprint::of_cert(cert.der())?;
    Ok(NewIdentity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        fingerprint,
    })
}

/// The file names of an identity in a folder: `node.crt` and `node.key`.
pub fn paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    )
}

/// Writes a new identity into `dir` as `<stem>.crt` and `<stem>.key` (the key readable by its
/// owner only). Refuses to overwrite an existing key.
pub fn create(
    dir: &Path,
    stem: &str,
    name: &str,
    sans: &[String],
) -> Result<Fingerprint, IdentityError> {
    let (crt, key) = paths(dir, stem);
    if key.exists() {
        return Err(IdentityError::Exists { path: key });
    }
    std::fs::create_dir_all(dir).map_err(|source| IdentityError::Write {
        path: dir.into(),
        source,
    })?;
    let new = generate(name, sans)?;
    write_private(&key, new.key_pem.as_bytes())?;
    std::fs::write(&crt, new.cert_pem.as_bytes())
        .map_err(|source| IdentityError::Write { path: crt, source })?;
    Ok(new.fingerprint)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let err = |source| IdentityError::Write {
        path: path.into(),
        source,
    };
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Loads an identity from PEM files.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Identity, IdentityError> {
    let certs = load_certs(cert_path)?;
    let key_pem = std::fs::read(key_path).map_err(|source| IdentityError::Read {
        path: key_path.into(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| IdentityError::NoKey {
        path: key_path.into(),
        detail: e.to_string(),
    })?;
    let fingerprint = Fingerprint::of_cert(&certs[0])?;
    Ok(Identity {
        certs,
        key,
        fingerprint,
    })
}

/// Loads every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let pem = std::fs::read(path).map_err(|source| IdentityError::Read {
        path: path.into(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::NoCert {
            path: path.into(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(IdentityError::NoCert {
            path: path.into(),
            detail: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Loads `<stem>.crt`/`<stem>.key` from `dir`, making them first if they do not exist yet.
pub fn load_or_create(
    dir: &Path,
    stem: &str,
    name: &str,
    sans: &[String],
) -> Result<(Identity, bool), IdentityError> {
    let (crt, key) = paths(dir, stem);
    let created = if key.exists() {
        false
    } else {
        create(dir, stem, name, sans)?;
        true
    };
    Ok((load(&crt, &key)?, created))
}

/// Makes `path` readable and writable by its owner alone (a folder: also listable by its owner
/// alone): stores, buffers and logs hold what the node knows, and only its user may read them.
pub fn owner_only(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if path.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_and_fingerprint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fp = create(dir.path(), "node", "edge1", &["edge1".into()]).expect("created");
        let (crt, key) = paths(dir.path(), "node");
        let id = load(&crt, &key).expect("loads");
        assert_eq!(id.fingerprint, fp);
        assert_eq!(fp.to_string().parse::<Fingerprint>().expect("parses"), fp);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            create(dir.path(), "node", "edge1", &[]),
            Err(IdentityError::Exists { .. })
        ));
        assert!("sha256:xyz".parse::<Fingerprint>().is_err());
    }
}
