//! The buses `--spawn` starts: one node on its own SQLite file or memory,
//! or `--nodes N` processes sharing one PostgreSQL schema that this run
//! creates for itself and drops afterwards.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::process::{CpuProbe, Spawned};
use super::{BenchArgs, SpawnStore};

/// Schemas created by this process so far (their names' last part).
static SCHEMAS: AtomicU32 = AtomicU32::new(0);

/// How long dropping the schema may wait for a lock (a killed node's
/// backend that has not noticed yet) before giving up with a warning.
const DROP_LOCK_TIMEOUT: &str = "10s";

impl SpawnStore {
    pub fn name(self) -> &'static str {
        match self {
            SpawnStore::Sqlite => "sqlite",
            SpawnStore::Memory => "memory",
            SpawnStore::Postgres => "postgres",
        }
    }
}

/// Checks `--nodes` against the store before anything starts.
pub fn check(args: &BenchArgs) -> Result<(), String> {
    if args.nodes <= 1 {
        return Ok(());
    }
    match args.spawn {
        Some(SpawnStore::Postgres) => Ok(()),
        Some(store @ (SpawnStore::Sqlite | SpawnStore::Memory)) => Err(format!(
            "--nodes {} needs --spawn postgres: the {} store belongs to one process and cannot be shared by several nodes",
            args.nodes,
            store.name()
        )),
        None => Err(format!(
            "--nodes {} starts the nodes itself: use it with --spawn postgres",
            args.nodes
        )),
    }
}

/// Running nodes, killed (then their schema dropped) on drop.
pub struct Nodes {
    // Field order is drop order: the nodes go before their schema.
    spawned: Vec<Spawned>,
    _schema: Option<Schema>,
    pub store: SpawnStore,
}

impl Nodes {
    /// Starts `--nodes` buses with the `--spawn` store.
    pub async fn start(args: &BenchArgs, store: SpawnStore) -> Result<Self, String> {
        let mut extra = args.serve_args.clone();
        if let Some(key) = &args.api_key {
            extra.extend(["--api-key".to_owned(), key.clone()]);
        }
        let schema = match store {
            SpawnStore::Postgres => Some(Schema::create(&args.database_url).await?),
            SpawnStore::Sqlite | SpawnStore::Memory => None,
        };
        let url = schema.as_ref().map(Schema::url);
        let env: Vec<(&str, &str)> = url.iter().map(|u| ("AGENT_BUS_DATABASE_URL", u.as_str())).collect();
        let mut nodes = Self {
            spawned: Vec::new(),
            _schema: schema,
            store,
        };
        // One after the other: the first applies the migrations (the others
        // would wait on its advisory lock anyway).
        for _ in 0..args.nodes.max(1) {
            nodes.spawned.push(Spawned::bus(store.name(), &extra, &env)?);
        }
        Ok(nodes)
    }

    pub fn urls(&self) -> Vec<String> {
        self.spawned.iter().map(|s| s.addr.clone()).collect()
    }

    pub fn probe(&self) -> CpuProbe {
        CpuProbe {
            pids: self.spawned.iter().map(Spawned::pid).collect(),
            postgres: self.store == SpawnStore::Postgres,
        }
    }
}

/// A schema of its own for one run's nodes.
struct Schema {
    base: String,
    name: String,
}

impl Schema {
    async fn create(base: &str) -> Result<Self, String> {
        let n = SCHEMAS.fetch_add(1, Ordering::Relaxed);
        let name = format!("agentbus_bench_{}_{n}", std::process::id());
        // A schema left by an earlier process with the same PID goes first.
        execute(
            base,
            &format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"),
        )
        .await?;
        Ok(Self {
            base: base.to_owned(),
            name,
        })
    }

    /// The nodes' database URL: the base with the schema as search path.
    fn url(&self) -> String {
        with_search_path(&self.base, &self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        let sql = format!("SET lock_timeout = '{DROP_LOCK_TIMEOUT}'; DROP SCHEMA IF EXISTS {name} CASCADE");
        // Drop may run inside the bench's runtime, which cannot be blocked
        // on from within: a thread with a runtime of its own does it.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(execute(&base, &sql))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("agentbus bench: could not drop schema {name} ({error}); drop it by hand"),
            Err(_) => eprintln!("agentbus bench: could not drop schema {name}; drop it by hand"),
        }
    }
}

/// `url` with `search_path` set to `schema` for every connection, in the
/// URL form (`postgres://...?options=...`) or the key-value form.
fn with_search_path(url: &str, schema: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}options=-csearch_path%3D{schema}")
    } else {
        format!("{url} options='-csearch_path={schema}'")
    }
}

async fn execute(url: &str, sql: &str) -> Result<(), String> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("--database-url is not a PostgreSQL URL: {e}"))?;
    let target = crate::store::postgres::describe(&config);
    let connect = config.connect(tokio_postgres::NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| format!("cannot reach PostgreSQL at {target}: no answer in 10 s"))?
        .map_err(|e| format!("cannot reach PostgreSQL at {target}: {}", with_cause(&e)))?;
    let connection = tokio::spawn(connection);
    let result = client
        .batch_execute(sql)
        .await
        .map_err(|e| format!("PostgreSQL at {target}: {}", with_cause(&e)));
    drop(client);
    let _ = connection.await;
    result
}

/// The driver's message and what caused it ("error connecting to server"
/// alone does not say that the connection was refused).
fn with_cause(error: &tokio_postgres::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::with_search_path;

    #[test]
    fn the_search_path_goes_into_either_form_of_database_url() {
        assert_eq!(
            with_search_path("postgres://postgres@127.0.0.1:5432/test", "s_1"),
            "postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3Ds_1"
        );
        assert_eq!(
            with_search_path("postgresql://db/bus?sslmode=disable", "s_1"),
            "postgresql://db/bus?sslmode=disable&options=-csearch_path%3Ds_1"
        );
        assert_eq!(
            with_search_path("host=127.0.0.1 user=postgres dbname=test", "s_1"),
            "host=127.0.0.1 user=postgres dbname=test options='-csearch_path=s_1'"
        );
    }
}
