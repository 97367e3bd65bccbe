//! A private PostgreSQL server run from the machine's PostgreSQL binaries: the
//! default database of `hookrelay serve` and the throwaway cluster of the tests.
//!
//! - The cluster listens only on a Unix socket inside its own 0700 directory,
//!   so `trust` authentication reaches no one but this process (and root).
//! - initdb and postgres refuse to run as root; as root they run as the
//!   `postgres` user, which must be able to reach the data directory.
//! - No PostgreSQL process outlives its owner: postgres runs under a small
//!   shell guard that reads our end of a pipe. When we stop, or die even by
//!   SIGKILL, the pipe closes, and the guard shuts PostgreSQL down.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

const SOCKET_PORT: u16 = 5432;
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries (initdb, postgres) found on PATH or under \
         /usr/lib/postgresql/*/bin; install them with `apt-get install postgresql` \
         (Debian/Ubuntu), or set DATABASE_URL to use an existing PostgreSQL server"
    )]
    NoBinaries,
    #[error(
        "the `postgres` user cannot write to {0}; PostgreSQL refuses to run as root, so as root \
         the embedded database runs as `postgres`: set HOOKRELAY_DATA_DIR to a directory it can \
         reach (e.g. /var/lib/hookrelay), or set DATABASE_URL"
    )]
    Unreachable(PathBuf),
    #[error("running as root, but there is no `postgres` user to run PostgreSQL as")]
    NoPostgresUser,
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The cluster directory: created and initialised on first run, reused afterwards.
    pub dir: PathBuf,
    /// Where initdb and postgres live; searched for when None.
    pub bin_dir: Option<PathBuf>,
    /// A throwaway cluster, deleted when it stops.
    pub ephemeral: bool,
    /// Flush commits to disk (production behaviour). Tests turn it off for speed;
    /// benchmarks keep it on, since durability is what they measure.
    pub fsync: bool,
    pub max_connections: u32,
    /// More server settings, `name=value` each (the benchmark's synchronous
    /// standby, say).
    pub settings: Vec<String>,
}

/// A running cluster. Dropping it stops PostgreSQL and waits for it.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    dir: PathBuf,
    socket_dir: PathBuf,
    guard: Child,
    stdin: Option<ChildStdin>,
    postgres_pid: u32,
    bin_dir: PathBuf,
}

#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl EmbeddedPostgres {
    /// Initialises the cluster if needed, starts it and waits until it accepts connections.
    /// Blocking: call it from `spawn_blocking` inside async code.
    pub fn start(options: &EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let bin_dir = match &options.bin_dir {
            Some(dir) => dir
                .join("initdb")
                .is_file()
                .then(|| dir.clone())
                .ok_or(EmbeddedError::NoBinaries)?,
            None => find_bin_dir().ok_or(EmbeddedError::NoBinaries)?,
        };
        let run_as = run_as()?;
        if let Some(user) = run_as {
            place_for_postgres_user(&options.dir, user)?;
        }
        fs::create_dir_all(&options.dir)?;
        // Absolute: the PostgreSQL processes run from `/`.
        let dir = &fs::canonicalize(&options.dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        if let Some(user) = run_as {
            std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))?;
            let probe = command("test", run_as).arg("-w").arg(dir).status()?;
            if !probe.success() {
                return Err(EmbeddedError::Unreachable(dir.clone()));
            }
        }

        if !dir.join("PG_VERSION").exists() {
            let mut initdb = command(bin_dir.join("initdb"), run_as);
            initdb
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "-D",
                ])
                .arg(dir);
            if options.ephemeral {
                initdb.arg("--no-sync");
            }
            run(&mut initdb, "initdb")?;
        }

        let socket_dir = socket_dir_for(dir, run_as)?;
        let mut settings = vec![
            "-c".to_owned(),
            "listen_addresses=".to_owned(),
            "-c".to_owned(),
            format!("max_connections={}", options.max_connections),
        ];
        for setting in &options.settings {
            settings.extend(["-c".to_owned(), setting.clone()]);
        }
        if !options.fsync {
            for setting in [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ] {
                settings.extend(["-c".to_owned(), setting.to_owned()]);
            }
        }
        let postgres = bin_dir.join("postgres");
        let cleanup = if options.ephemeral {
            r#"rm -rf "$1""#
        } else {
            ":"
        };
        // $1 cluster dir, $2 socket dir, $3 postgres, $4.. settings. SIGTERM is a
        // smart shutdown: it lets open sessions finish, and ours are closed by then.
        // A session someone else left open gets 10 s, then a fast shutdown (SIGINT).
        // The timer takes its `sleep` with it when it is cancelled: nothing outlives the guard.
        let script = format!(
            r#"d="$1"; s="$2"; pg="$3"; shift 3
"$pg" -D "$d" -k "$s" -p {SOCKET_PORT} "$@" >>"$d/postgres.log" 2>&1 &
pid=$!
echo "$pid"
read _ignored
kill -TERM "$pid" 2>/dev/null
(sleep 10 & s=$!; trap 'kill "$s" 2>/dev/null; exit 0' TERM; wait "$s"; kill -INT "$pid" 2>/dev/null) &
fast=$!
wait "$pid"
kill "$fast" 2>/dev/null
wait "$fast"
set -- "$d"
{cleanup}
"#
        );
        let mut guard = command("sh", run_as);
        guard
            .arg("-c")
            .arg(script)
            .arg("hookrelay-postgres")
            .arg(dir)
            .arg(&socket_dir)
            .arg(&postgres)
            .args(&settings)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group: a terminal's Ctrl-C reaches hookrelay, which
            // then stops PostgreSQL after draining, not before.
            .process_group(0);
        let mut guard = guard.spawn()?;
        let stdin = guard.stdin.take();
        let mut pid_line = String::new();
        BufReader::new(guard.stdout.take().expect("stdout is piped")).read_line(&mut pid_line)?;
        let postgres_pid = pid_line.trim().parse().map_err(|_| EmbeddedError::Failed {
            what: "starting postgres".into(),
            detail: log_tail(dir),
        })?;
        let mut cluster = EmbeddedPostgres {
            dir: dir.clone(),
            socket_dir,
            guard,
            stdin,
            postgres_pid,
            bin_dir,
        };
        cluster.wait_ready(dir)?;
        Ok(cluster)
    }

    /// Connection options for `database` on this cluster.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(SOCKET_PORT)
            .username("postgres")
            .database(database)
    }

    /// Copies this cluster into `dir` (new) with pg_basebackup, ready to start
    /// as a streaming standby (`standby.signal` is written): start it with
    /// `primary_conninfo` among its settings.
    pub fn base_backup(&self, dir: &Path) -> Result<(), EmbeddedError> {
        let run_as = run_as()?;
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        if let Some(user) = run_as {
            std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))?;
        }
        run(
            command(self.bin_dir.join("pg_basebackup"), run_as)
                .arg("-h")
                .arg(&self.socket_dir)
                .args(["-p", &SOCKET_PORT.to_string(), "-U", "postgres"])
                .args(["-X", "stream", "-R", "--no-sync", "-D"])
                .arg(fs::canonicalize(dir)?),
            "pg_basebackup",
        )?;
        // The primary's socket lives in its directory: its lock came along.
        match fs::remove_file(dir.join(format!(".s.PGSQL.{SOCKET_PORT}.lock"))) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// The PID of the postmaster, for tests that check it is gone.
    pub fn postgres_pid(&self) -> u32 {
        self.postgres_pid
    }

    fn wait_ready(&mut self, dir: &Path) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid_file = dir.join("postmaster.pid");
        loop {
            // Line 1 is the postmaster's PID, line 8 its status ("ready" once it accepts connections).
            if let Ok(contents) = fs::read_to_string(&pid_file) {
                let lines: Vec<&str> = contents.lines().collect();
                if lines.first().map(|l| l.trim()) == Some(&self.postgres_pid.to_string())
                    && lines.get(7).map(|l| l.trim()) == Some("ready")
                {
                    return Ok(());
                }
            }
            let exited = !Path::new(&format!("/proc/{}", self.postgres_pid)).exists();
            if exited || Instant::now() > deadline {
                return Err(EmbeddedError::Failed {
                    what: format!("starting postgres in {}", dir.display()),
                    detail: log_tail(dir),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// If PostgreSQL has exited on its own, why (the tail of its log).
    pub fn exited(&mut self) -> Option<String> {
        if Path::new(&format!("/proc/{}", self.postgres_pid)).exists()
            && !is_zombie(self.postgres_pid)
        {
            return None;
        }
        // Reap the guard (it has nothing left to stop) and say why.
        self.stdin.take();
        let _ = self.guard.wait();
        Some(format!(
            "postgres (pid {}) is gone; its log ends: {}",
            self.postgres_pid,
            log_tail(&self.dir)
        ))
    }

    /// Stops PostgreSQL and waits until it has exited.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
            drop(stdin);
            let _ = self.guard.wait();
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// As root, the cluster must be reachable by the `postgres` user. When the data
/// directory is not (say, under /root), the cluster goes to
/// /var/lib/hookrelay/clusters/<hash of the data dir>, linked from `dir`, so the
/// data directory still leads to it and later runs find it again.
fn place_for_postgres_user(dir: &Path, user: RunAs) -> Result<(), EmbeddedError> {
    if fs::symlink_metadata(dir).is_ok() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let parent = fs::canonicalize(parent)?;
    if command("test", Some(user))
        .arg("-x")
        .arg(&parent)
        .status()?
        .success()
    {
        return Ok(());
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(
        parent
            .join(dir.file_name().unwrap_or_default())
            .as_os_str()
            .as_encoded_bytes(),
    ));
    let fallback = Path::new("/var/lib/hookrelay/clusters").join(&digest[..16]);
    fs::create_dir_all(&fallback)?;
    for ancestor in ["/var/lib/hookrelay", "/var/lib/hookrelay/clusters"] {
        fs::set_permissions(ancestor, fs::Permissions::from_mode(0o711))?;
    }
    std::os::unix::fs::symlink(&fallback, dir)?;
    tracing::warn!(
        dir = %dir.display(),
        cluster = %fallback.display(),
        "the postgres user cannot reach the data directory; the embedded cluster lives in {} instead",
        fallback.display()
    );
    Ok(())
}

/// `initdb` on PATH, else the newest /usr/lib/postgresql/<version>/bin.
fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
    });
    if let Some(dir) = on_path {
        // PATH often holds symlinks (Debian's /usr/local/bin): use the real directory.
        return fs::canonicalize(dir.join("initdb"))
            .ok()
            .and_then(|real| real.parent().map(Path::to_path_buf));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// As root, the `postgres` user's ids; otherwise run as ourselves.
fn run_as() -> Result<Option<RunAs>, EmbeddedError> {
    let status = fs::read_to_string("/proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse::<u32>().ok());
    if euid != Some(0) {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3).then(|| {
                Some(RunAs {
                    uid: fields[2].parse().ok()?,
                    gid: fields[3].parse().ok()?,
                })
            })?
        })
        .map(Some)
        .ok_or(EmbeddedError::NoPostgresUser)
}

fn command(program: impl AsRef<std::ffi::OsStr>, run_as: Option<RunAs>) -> Command {
    let mut command = Command::new(program);
    command.current_dir("/").env("LC_ALL", "C");
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
    }
    command
}

fn run(command: &mut Command, what: &str) -> Result<(), EmbeddedError> {
    let output = command.output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(EmbeddedError::Failed {
        what: what.to_owned(),
        detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// Unix socket paths are limited to 107 bytes: use the cluster directory when it
/// is short enough, else a private directory under /tmp.
fn socket_dir_for(dir: &Path, run_as: Option<RunAs>) -> Result<PathBuf, EmbeddedError> {
    if dir.as_os_str().len() + ".s.PGSQL.5432".len() + 1 < 100 {
        return Ok(dir.to_path_buf());
    }
    let socket_dir = std::env::temp_dir().join(format!("hookrelay-pg-{}", std::process::id()));
    fs::create_dir_all(&socket_dir)?;
    fs::set_permissions(&socket_dir, fs::Permissions::from_mode(0o700))?;
    if let Some(user) = run_as {
        std::os::unix::fs::chown(&socket_dir, Some(user.uid), Some(user.gid))?;
    }
    Ok(socket_dir)
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                .map(|state| state == "Z")
        })
        .unwrap_or(true)
}

fn log_tail(dir: &Path) -> String {
    let log = fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().rev().take(5).collect();
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    if tail.is_empty() {
        "postgres exited without a log".to_owned()
    } else {
        tail.join(" | ")
    }
}
