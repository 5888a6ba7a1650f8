//! ballast's end-to-end tests, one test binary (`cargo test -p ballast-tests --test it`;
//! one module per suite: `--test it fault_matrix::` runs one). One binary links once and
//! lets libtest run the suites' tests in parallel threads:
//! - real guests come from the process-wide lab (`ballast_testvm::Lab`), whose guest
//!   slots (`BALLAST_LAB_MAX_GUESTS`) queue tests that would overload the host; every
//!   guest, run folder and domain carries a unique `ballast-test-<pid>-<n>` name;
//! - collectors and agents run in their own temporary directories on free loopback ports;
//! - the debootstrap roots of `deploy` and `install_deps_host_safety` are built once,
//!   under a lock (`ballast_tests::debian_root`).

mod delivery_real_collector;
mod deploy;
mod fault_matrix;
mod fleet_e2e;
mod hostile_guests;
mod install_deps_host_safety;
mod lab_smoke;
mod openstack_node;
mod quickstart;
mod tls_link;
mod two_collectors;
mod verdict_suite;
mod virtio_mem_e2e;
mod virtio_mem_proxmox_e2e;
mod wrong_url;
