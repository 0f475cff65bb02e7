//! A test CA and server certificates for `127.0.0.1`, made with the `openssl` command line
//! (the machine image has it; `.ci/run` installs it when missing).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and a certificate for `127.0.0.1` (and `localhost`) it signed, as PEM files in `dir`.
#[derive(Debug)]
pub(crate) struct TestCerts {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    dir: PathBuf,
    ca_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCerts {
    /// Makes the CA and a first server certificate whose subject is `CN=<cn>`.
    pub(crate) fn new(dir: &Path, cn: &str) -> Self {
        let certs = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
            dir: dir.to_path_buf(),
            ca_key: dir.join("ca-key.pem"),
        };
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=gf-registry test CA",
                "-keyout",
                "ca-key.pem",
                "-out",
                "ca.pem",
            ],
        );
        certs.issue(cn);
        certs
    }

    /// Replaces the server certificate and key with new ones whose subject is `CN=<cn>`,
    /// each file written whole in one rename.
    pub(crate) fn issue(&self, cn: &str) {
        self.sign(
            cn,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            "next.pem",
            "next-key.pem",
        );
        let dir = &self.dir;
        std::fs::rename(dir.join("next-key.pem"), &self.key).expect("install key");
        std::fs::rename(dir.join("next.pem"), &self.cert).expect("install cert");
    }

    /// A client certificate whose subject is `CN=<cn>`, signed by this CA: its certificate
    /// and key files.
    pub(crate) fn issue_client(&self, cn: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (format!("client-{cn}.pem"), format!("client-{cn}-key.pem"));
        self.sign(cn, "extendedKeyUsage=clientAuth\n", &cert, &key);
        (self.dir.join(cert), self.dir.join(key))
    }

    /// A new P-256 key (`key`, in the folder) and a certificate for it (`cert`) whose subject
    /// is `CN=<cn>`, with the extensions `ext`, signed by the CA.
    fn sign(&self, cn: &str, ext: &str, cert: &str, key: &str) {
        let dir = &self.dir;
        std::fs::write(dir.join("ext.cnf"), ext).expect("ext.cnf");
        let subject = format!("/CN={cn}");
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &subject,
                "-keyout",
                key,
                "-out",
                "next.csr",
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "next.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                self.ca_key.to_str().expect("utf-8"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                cert,
            ],
        );
    }
}
