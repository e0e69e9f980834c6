//! A schema of its own for one test, dropped (with everything in it) when the value is
//! dropped: what every PostgreSQL test of the workspace uses to stay apart from the others.

/// A fresh schema name in the database at `url`; `DROP SCHEMA … CASCADE` on drop.
#[derive(Debug)]
pub struct TestSchema {
    pub url: String,
    pub name: String,
}

impl TestSchema {
    /// A schema named `<prefix><random hex>` (not created yet: the store creates it).
    pub fn fresh(url: &str, prefix: &str) -> TestSchema {
        TestSchema {
            url: url.to_string(),
            name: format!("{prefix}{:016x}", rand::random::<u64>()),
        }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop may run inside a runtime: do the work on a thread with a runtime of its own.
        // (The caller's connections must be able to finish: a multi-threaded runtime, or
        // none, so that an open transaction of theirs does not hold the schema's locks.)
        let (url, name) = (self.url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let client = crate::connect_session(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test schema {}: {e}", self.name),
            Err(_) => eprintln!("could not drop the test schema {}", self.name),
        }
    }
}
