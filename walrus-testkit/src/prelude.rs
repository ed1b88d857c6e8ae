//! What most process tests use, for one glob import; a test that wants another form of a
//! name (the async `poll_until`, `dig_a` as text) imports it by name, which shadows this.

#[cfg(feature = "actors")]
pub use crate::deploy::with_certs;
pub use crate::deploy::{
    add_to_node, deployment_toml, node_address, patient_reports, three_controllers_two_workers,
    two_area_toml, AreaSpec, NodeProcess, NodeSpec, ServerSpec, TinyHttp,
};
pub use crate::dir::TempDir;
pub use crate::dns::{dig_a, Named};
pub use crate::init_logs;
pub use crate::net::{free_dns_port, free_tcp_port, free_udp_port, http_get, wait_port};
pub use crate::nft::Partition;
pub use crate::process::{need, ChildGuard};
pub use crate::wait::{poll_until, poll_until_ok, poll_until_with, PATIENCE};
pub use crate::web::{Nginx, Site};
