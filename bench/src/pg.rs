//! Scenario 5's database: a fresh PostgreSQL database per run, created through the server URL
//! given and dropped afterwards, so runs never see each other's records.

use sqlx::AnyPool;

use crate::BoxError;

/// A database created for this run.
pub struct BenchDatabase {
    server_url: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

/// `server_url` with its database replaced by `name`.
fn with_database(server_url: &str, name: &str) -> Result<String, BoxError> {
    let mut url = url::Url::parse(server_url)?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "not a PostgreSQL URL (postgres://…): scheme {:?}",
            url.scheme()
        )
        .into());
    }
    url.set_path(&format!("/{name}"));
    Ok(url.into())
}

impl BenchDatabase {
    /// Creates `club_bench_<pid>` on the server that `server_url` names.
    pub async fn create(server_url: &str) -> Result<Self, BoxError> {
        sqlx::any::install_default_drivers();
        let name = format!("club_bench_{}", std::process::id());
        let url = with_database(server_url, &name)?;
        let admin = AnyPool::connect(server_url).await?;
        let created = async {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
        }
        .await;
        admin.close().await;
        created?;
        Ok(Self {
            server_url: server_url.to_owned(),
            name,
            url,
        })
    }

    /// The database's name (safe to print: the URL holds a password).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database.
    pub async fn drop_database(self) {
        let dropped = async {
            let admin = AnyPool::connect(&self.server_url).await?;
            let result = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&admin)
            .await;
            admin.close().await;
            result.map(|_| ())
        }
        .await;
        if let Err(error) = dropped {
            eprintln!("cannot drop the bench database {}: {error}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/club_test", "club_bench_1").ok(),
            Some("postgres://u:p@127.0.0.1:5432/club_bench_1".to_owned())
        );
        assert_eq!(
            with_database("postgresql://u@127.0.0.1/x?sslmode=disable", "b").ok(),
            Some("postgresql://u@127.0.0.1/b?sslmode=disable".to_owned())
        );
        assert!(with_database("sqlite:club.db", "b").is_err());
    }
}
