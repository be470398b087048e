//! A throwaway PostgreSQL server for tests and benches: `initdb` as the `postgres` user into a
//! temporary dir, listening on a Unix socket only, stopped (and its files removed) when the
//! process that started it exits; a fresh database for each caller. Needs root (it runs the
//! server as `postgres`) and installs Debian's `postgresql` if it is missing. Where the
//! server cannot start, callers fail under `CI=true` and are skipped (with a message)
//! elsewhere.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Server {
    socket_dir: PathBuf,
    port: u16,
}

/// A fresh, empty database on the shared test server.
pub struct Database {
    /// Connection string for it.
    pub url: String,
    pub name: String,
    /// Connection string for the server's `postgres` database, to administer this one.
    pub admin_url: String,
}

impl Database {
    /// Creates a database; `None` (with a message) where the server cannot start, which
    /// fails the test instead under `CI=true`.
    pub async fn create() -> Option<Database> {
        let server = match server() {
            Ok(server) => server,
            Err(why) => {
                assert!(std::env::var("CI").as_deref() != Ok("true"), "no PostgreSQL server for the tests: {why}");
                eprintln!("skipped: no PostgreSQL server for the tests: {why}");
                return None;
            }
        };
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let admin = server.url("postgres");
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.unwrap();
        let connection = tokio::spawn(connection);
        client.execute(&format!("CREATE DATABASE {name}"), &[]).await.unwrap();
        drop(client);
        let _ = connection.await;
        Some(Database { url: server.url(&name), name, admin_url: admin })
    }
}

impl Server {
    fn url(&self, database: &str) -> String {
        format!("host={} port={} user=postgres dbname={database}", self.socket_dir.display(), self.port)
    }
}

fn server() -> Result<&'static Server, String> {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    SERVER.get_or_init(start).as_ref().map_err(Clone::clone)
}

fn run(command: &mut Command) -> Result<String, String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!("{command:?}: {}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The server binaries' directory, installing Debian's `postgresql` if it is missing.
fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = run(Command::new("pg_config").arg("--bindir")) {
        return Ok(PathBuf::from(dir));
    }
    run(Command::new("apt-get").args(["install", "-y", "-q", "postgresql"]))?;
    run(Command::new("pg_config").arg("--bindir")).map(PathBuf::from)
}

fn start() -> Result<Server, String> {
    let bin = bin_dir()?;
    let root = std::env::temp_dir().join(format!("hookwasm-pg-{}", std::process::id()));
    let (data, socket_dir) = (root.join("data"), root.join("socket"));
    std::fs::create_dir_all(&socket_dir).map_err(|e| e.to_string())?;
    run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&root))?;
    run(Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join("initdb"))
        .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "-D"])
        .arg(&data))?;
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    // The server stops once this test process is gone, and its files go with it.
    let script = format!(
        "{postgres} -D {data} -k {socket} -p {port} -c listen_addresses= -c max_connections=200 \
         >{root}/server.log 2>&1 & server=$!; \
         while [ -d /proc/{test} ] && kill -0 $server 2>/dev/null; do sleep 1; done; \
         kill -INT $server 2>/dev/null; wait $server; rm -rf {root}",
        postgres = bin.join("postgres").display(),
        data = data.display(),
        socket = socket_dir.display(),
        root = root.display(),
        test = std::process::id(),
    );
    Command::new("runuser")
        .args(["-u", "postgres", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .arg("-h")
            .arg(&socket_dir)
            .args(["-p", &port.to_string(), "-q"])
            .status()
            .is_ok_and(|status| status.success());
        if ready {
            return Ok(Server { socket_dir, port });
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(root.join("server.log")).unwrap_or_default();
            return Err(format!("postgres did not become ready in 30 s: {log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
