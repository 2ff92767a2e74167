//! A real PostgreSQL server for the historian's tests: Debian's `postgresql` package, a cluster
//! made in a temporary folder and served on a free loopback port. The server refuses to run as
//! root, so as root it runs as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// Serving TLS only over TCP, a password asked of `pointhub` (`start_tls`).
    tls: Option<String>,
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (apt-get install postgresql; bash tests/run does it)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("a PostgreSQL server under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a server program as the user that may run it.
fn pg(bin: &Path, prog: &str, args: &[&str]) -> std::process::Output {
    let path = bin.join(prog);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    cmd.args(args).output().expect("runs a PostgreSQL program")
}

impl Postgres {
    /// A new cluster with a trusted user `pointhub`, started.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(ok.success());
        }
        let data = dir.path().join("data");
        let out = pg(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf8"),
                "-A",
                "trust",
                "-U",
                "pointhub",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Postgres {
            port: crate::harness::free_port(),
            bin,
            dir,
            tls: None,
        };
        pg.up();
        pg
    }

    /// A cluster that takes TCP connections over TLS only (`hostssl`), with its certificate
    /// signed by the CA whose PEM this returns, and asks `pointhub` for `password`.
    pub fn start_tls(password: &str) -> (Postgres, String) {
        let mut pg = Postgres::start();
        pg.query(&format!("ALTER USER pointhub PASSWORD '{password}'"));
        pg.down();
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "database CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("signed");
        let data = PathBuf::from(pg.data());
        std::fs::write(data.join("server.crt"), cert.pem()).expect("write");
        std::fs::write(data.join("server.key"), key.serialize_pem()).expect("write");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write");
        let files = [
            data.join("server.key"),
            data.join("server.crt"),
            data.join("pg_hba.conf"),
        ];
        for f in &files {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            if is_root() {
                let ok = Command::new("chown")
                    .arg("postgres")
                    .arg(f)
                    .status()
                    .expect("chown");
                assert!(ok.success());
            }
        }
        pg.tls = Some(password.to_string());
        pg.up();
        (pg, ca.pem())
    }

    fn data(&self) -> String {
        self.dir
            .path()
            .join("data")
            .to_str()
            .expect("utf8")
            .to_string()
    }

    /// Starts the server (again) and waits until it takes queries.
    pub fn up(&self) {
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        if self.tls.is_some() {
            opts.push_str(" -c ssl=on");
        }
        let log = self.dir.path().join("log");
        let out = pg(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &opts,
                "-l",
                log.to_str().expect("utf8"),
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.try_query("SELECT 1").is_none() {
            assert!(Instant::now() < deadline, "PostgreSQL takes no queries");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast: open sessions are ended).
    pub fn down(&self) {
        let out = pg(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "fast", "-w", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The connection string the historian is given.
    pub fn url(&self) -> String {
        format!("postgresql://pointhub@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs `sql` with psql; its rows, fields split by `|`; none if the server is not there.
    pub fn try_query(&self, sql: &str) -> Option<Vec<Vec<String>>> {
        let out = Command::new("psql")
            .env("PGPASSWORD", self.tls.clone().unwrap_or_default())
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "pointhub",
                "-d",
                "postgres",
                "-Atc",
                sql,
            ])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.split('|').map(str::to_string).collect())
                .collect(),
        )
    }

    /// Runs `sql`; panics with psql's message if it fails.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        self.try_query(sql)
            .unwrap_or_else(|| panic!("query failed: {sql}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = pg(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "stop"],
        );
    }
}
