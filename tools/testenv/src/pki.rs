//! A throwaway certificate authority and the certificates a test environment needs from it.

use std::fs;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// A test certificate authority.
pub struct Pki {
    /// Its certificate, PEM.
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM.
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new() -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "testenv-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_pem = params.self_signed(&key)?.pem();
        Ok(Self { ca_pem, issuer: Issuer::new(params, key) })
    }

    /// A serving certificate for loopback (`127.0.0.1` and `localhost`).
    pub fn loopback_server(&self, common_name: &str) -> anyhow::Result<CertAndKey> {
        self.issue(common_name, None, vec!["127.0.0.1".into(), "localhost".into()], true)
    }

    /// A serving certificate for the Service `name` in `namespace`: the API server checks a
    /// webhook given by a Service reference against `<name>.<namespace>.svc`.
    pub fn service_server(&self, namespace: &str, name: &str) -> anyhow::Result<CertAndKey> {
        self.issue(name, None, vec![format!("{name}.{namespace}.svc")], true)
    }

    /// A certificate for `common_name` (in `organization`, which Kubernetes reads as a group),
    /// valid for the names and addresses `sans`: a serving certificate when `server`, else a
    /// client one.
    pub fn issue(
        &self,
        common_name: &str,
        organization: Option<&str>,
        sans: Vec<String>,
        server: bool,
    ) -> anyhow::Result<CertAndKey> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        if let Some(org) = organization {
            params.distinguished_name.push(DnType::OrganizationName, org);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

impl Pki {
    /// Writes a new loopback serving pair (`tls.crt`, `tls.key`) into `dir` the way the kubelet
    /// updates a mounted Secret: a new directory, then the `..data` symlink swapped atomically, so
    /// a reader never sees half a pair.
    pub fn write_loopback_pair(&self, dir: &Path, common_name: &str) -> anyhow::Result<()> {
        let pair = self.loopback_server(common_name)?;
        fs::create_dir_all(dir)?;
        let stamp = format!("..{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos());
        fs::create_dir_all(dir.join(&stamp))?;
        fs::write(dir.join(&stamp).join("tls.crt"), &pair.cert_pem)?;
        fs::write(dir.join(&stamp).join("tls.key"), &pair.key_pem)?;
        let link = dir.join("..data_tmp");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&stamp, &link)?;
        fs::rename(&link, dir.join("..data"))?;
        for file in ["tls.crt", "tls.key"] {
            if fs::symlink_metadata(dir.join(file)).is_err() {
                std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file))?;
            }
        }
        Ok(())
    }
}
