//! A schema of its own in the test database for each server under test
//! (AGENTBUS_TEST_DATABASE_URL, default the local
//! `postgres://postgres@127.0.0.1:5432/test` that .ci/run starts).

pub fn database_url() -> String {
    std::env::var("AGENTBUS_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema, dropped with everything in it when this is.
pub struct Schema {
    pub name: String,
}

impl Schema {
    pub async fn create(label: &str) -> Schema {
        let name = format!("agentbus_bb_{label}_{}", std::process::id());
        execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")).await;
        Schema { name }
    }

    /// The server's `--database-url`: the schema as its search path.
    pub fn url(&self) -> String {
        let base = database_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}options=-csearch_path%3D{}", self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(execute(&sql))
        })
        .join();
    }
}

pub async fn execute(sql: &str) {
    let url = database_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test database {url} (is PostgreSQL up?): {e}"));
    tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap();
}
