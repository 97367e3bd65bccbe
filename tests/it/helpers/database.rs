//! The test PostgreSQL: with DATABASE_URL unset, one throwaway cluster per test
//! process (it stops and deletes itself when the process exits), and a fresh
//! database per test.

use std::sync::OnceLock;

use hookrelay::embedded_db::{EmbeddedOptions, EmbeddedPostgres};
use sqlx::Connection;

enum Server {
    External(String),
    Embedded(EmbeddedPostgres),
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        }
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => Server::External(url),
            _ => {
                let dir = std::env::temp_dir().join(format!(
                    "hookrelay-test-{}-{}",
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                ));
                let cluster = EmbeddedPostgres::start(&EmbeddedOptions {
                    dir,
                    bin_dir: None,
                    ephemeral: true,
                    fsync: false,
                    max_connections: 500,
                    settings: Vec::new(),
                })
                .expect(
                    "the test PostgreSQL cluster starts (install PostgreSQL or set DATABASE_URL)",
                );
                Server::Embedded(cluster)
            }
        }
    })
}

/// A URL for `database` on the test server.
pub fn database_url(database: &str) -> String {
    match server() {
        Server::External(url) => {
            let mut url = url::Url::parse(url).expect("DATABASE_URL is a URL");
            url.set_path(database);
            url.to_string()
        }
        Server::Embedded(cluster) => {
            let options = cluster.connect_options(database);
            let socket = options
                .get_socket()
                .expect("a socket")
                .display()
                .to_string();
            format!(
                "postgres://postgres@localhost/{database}?host={socket}&port={}",
                options.get_port()
            )
        }
    }
}

/// The URL of the test server's maintenance database.
pub fn admin_url() -> String {
    match server() {
        Server::External(url) => url.clone(),
        Server::Embedded(_) => database_url("postgres"),
    }
}

/// A new, empty database; returns its URL.
pub async fn fresh_database() -> String {
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("connect to the test server");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"create database "{name}""#)))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    admin.close().await.ok();
    database_url(&name)
}

/// A PostgreSQL cluster of one test's own, for tests that stop it: `kill`
/// cuts every session as a failover does (fast shutdown), `restart` brings
/// it back on the same data and socket.
pub struct OwnCluster {
    _dir: tempfile::TempDir,
    options: EmbeddedOptions,
    cluster: Option<EmbeddedPostgres>,
    /// Its `postgres` database.
    pub url: String,
}

impl OwnCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let options = EmbeddedOptions {
            dir: dir.path().join("cluster"),
            bin_dir: None,
            ephemeral: false,
            fsync: false,
            max_connections: 50,
            settings: Vec::new(),
        };
        let cluster = Self::run(options.clone()).await;
        let socket = cluster.connect_options("postgres");
        let url = format!(
            "postgres://postgres@localhost/postgres?host={}&port={}",
            socket.get_socket().unwrap().display(),
            socket.get_port()
        );
        Self {
            _dir: dir,
            options,
            cluster: Some(cluster),
            url,
        }
    }

    async fn run(options: EmbeddedOptions) -> EmbeddedPostgres {
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options))
            .await
            .unwrap()
            .expect("the test cluster starts")
    }

    /// A fast shutdown: sessions are cut mid-transaction.
    pub fn kill(&mut self) {
        let cluster = self.cluster.take().expect("the cluster runs");
        let pid = cluster.postgres_pid();
        assert!(
            std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
        drop(cluster);
    }

    pub async fn restart(&mut self) {
        assert!(self.cluster.is_none(), "the cluster is stopped");
        self.cluster = Some(Self::run(self.options.clone()).await);
    }
}
