//! A schema of its own for each test, so tests share the database and run
//! in parallel: created on demand, dropped with the guard.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{PostgresOptions, PostgresStore};

/// The test database: `AGENTBUS_TEST_DATABASE_URL`, or the local one that
/// `.ci/run` makes sure is up.
pub fn database_url() -> String {
    std::env::var("AGENTBUS_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema; dropped, with everything in it, when this is.
pub struct TestSchema {
    pub name: String,
    /// [`database_url`] with the schema as its search path.
    pub url: String,
}

impl TestSchema {
    pub async fn create() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "agentbus_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let base = database_url();
        run(&base, &format!("CREATE SCHEMA {name}")).await;
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{name}");
        Self { name, url }
    }

    pub fn options(&self) -> PostgresOptions {
        PostgresOptions {
            url: self.url.clone(),
            pool_size: 8,
            feed_capacity: 64,
        }
    }

    pub async fn open(&self) -> PostgresStore {
        PostgresStore::open(&self.options())
            .await
            .expect("open the PostgreSQL store")
    }

    /// Runs `sql` in this schema.
    pub async fn execute(&self, sql: &str) {
        run(&self.url, sql).await;
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (base, sql) = (database_url(), format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        // Drop cannot await: a runtime of its own, on a thread of its own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| runtime.block_on(run(&base, &sql)))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}", self.name);
        }
    }
}

async fn run(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test database {url} (is PostgreSQL up?): {e}"));
    let driver = tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = driver.await;
}
