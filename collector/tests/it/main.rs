//! The collector's integration tests, one test binary (`cargo test -p ballast-collector
//! --test it`; one module per area: `--test it webhooks::` runs one). One binary links
//! once and lets libtest run every test in parallel threads; each test uses its own
//! temporary directory, database and loopback port, so they share the process safely.

mod util;

mod bounds;
mod config_example;
mod dashboard_browser;
mod dashboard_virtio_mem;
mod explain_upload;
mod guard;
mod http;
mod metrics;
mod pressure;
mod reload;
mod reports;
mod storage_postgres;
mod storage_sqlite;
mod virtio_mem;
mod vm_identity;
mod webhooks;
