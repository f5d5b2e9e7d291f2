//! The server's own configuration, `config/sluice.yml`: strict (unknown keys are errors), every
//! key documented, every key optional.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::Ceilings;
use crate::egress::Action;

/// Environment variable that sets (and overrides) `admin_token`.
pub const ADMIN_TOKEN_ENV: &str = "SLUICE_ADMIN_TOKEN";
/// Environment variable that sets (and overrides) `database`.
pub const DATABASE_URL_ENV: &str = "SLUICE_DATABASE_URL";

/// `config/sluice.yml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the REST API (`--listen` overrides it). Port 0 picks a free port; the chosen
    /// address is printed as `sluice serve listening on <addr>`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Folder for the database (`sluice.db`) and per-pipeline files (`pipelines/<id>/`);
    /// `--data-dir` overrides it. Created if missing.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Bearer token of the administrator. `SLUICE_ADMIN_TOKEN` overrides it. When neither is
    /// set, a random one is generated once and kept in `<data_dir>/admin-token` (mode 0600).
    #[serde(default)]
    pub admin_token: Option<String>,
    /// The database: `sqlite://<path>` or `postgres://user:password@host:port/db`
    /// (`SLUICE_DATABASE_URL` and `--database` override it). Default: SQLite in
    /// `<data_dir>/sluice.db`. Nodes sharing one PostgreSQL database share the pipelines
    /// (docs/service.md §9).
    #[serde(default)]
    pub database: Option<String>,
    /// This node's id, written on its heartbeat and on the pipelines and host_id leases it
    /// holds (`--node-id` overrides it). Default: the hostname. Unique per node.
    #[serde(default)]
    pub node_id: Option<String>,
    /// The address other nodes reach this node's API at, to forward a request about a
    /// pipeline this node runs. Default: the bound listen address.
    #[serde(default)]
    pub advertise_address: Option<SocketAddr>,
    /// Allow pipelines to name absolute paths (`write.file.dir`, `account.file.filename`).
    /// Off by default: a tenant's relative paths resolve inside its pipeline's data folder.
    #[serde(default)]
    pub allow_absolute_paths: bool,
    /// Bearer token that may read `GET /metrics` (for a Prometheus scrape job), besides the
    /// admin token. Unset: only the admin token.
    #[serde(default)]
    pub metrics_token: Option<String>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Where pipelines may connect.
    #[serde(default)]
    pub egress: EgressConfig,
    /// The REST API's connections.
    #[serde(default)]
    pub http: HttpConfig,
}

/// `egress:` where pipelines may connect (their analyzers, S3 and IAM endpoints). Link-local
/// (cloud metadata), unspecified, multicast and broadcast addresses and the server's own listen
/// address are always refused; then the longest matching prefix of `allow` and `deny` decides
/// (deny on a tie), and `default` decides what matches neither.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// CIDRs pipelines may reach.
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// CIDRs pipelines may not reach.
    #[serde(default)]
    pub deny: Vec<IpNet>,
    /// `allow` (default) or `deny`: what matches neither list.
    #[serde(default = "default_egress_action")]
    pub default: Action,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            allow: Vec::new(),
            deny: Vec::new(),
            default: default_egress_action(),
        }
    }
}

fn default_egress_action() -> Action {
    Action::Allow
}

/// `http:` the REST API's connections.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Seconds a client has to send a request's headers; an idle keep-alive connection is
    /// closed after as long.
    #[serde(default = "default_header_timeout_secs")]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body.
    #[serde(default = "default_body_timeout_secs")]
    pub body_timeout_secs: u64,
    /// Connections served at once; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout_secs: default_header_timeout_secs(),
            body_timeout_secs: default_body_timeout_secs(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_header_timeout_secs() -> u64 {
    10
}

fn default_body_timeout_secs() -> u64 {
    30
}

fn default_max_connections() -> usize {
    512
}

/// `limits:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body in bytes (larger gets 413).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most pipelines one tenant may define (one more gets 403 `pipeline_limit`).
    #[serde(default = "default_pipelines_per_tenant")]
    pub pipelines_per_tenant: u64,
    /// Seconds a node's hold on its pipelines (and their host_id leases) lives without renewal:
    /// the node renews every fifteenth of it, stops its pipelines itself once 4/5 of it passed
    /// without a renewal, and another node takes them over 2 s after it (docs/service.md §9).
    #[serde(default = "default_lease_ttl_secs")]
    pub lease_ttl_secs: u64,
    /// Seconds between saves of each pipeline's counters to the `account` table.
    #[serde(default = "default_account_save_secs")]
    pub account_save_secs: u64,
    /// Largest WebAssembly module accepted by `POST /v1/modules` (larger gets 413).
    #[serde(default = "default_max_module_bytes")]
    pub max_module_bytes: usize,
    /// Modules one tenant may keep (one more gets 403 `quota_exceeded`).
    #[serde(default = "default_modules_per_tenant")]
    pub modules_per_tenant: u64,
    /// Bytes of modules one tenant may keep.
    #[serde(default = "default_module_bytes_per_tenant")]
    pub module_bytes_per_tenant: u64,
    /// Spool bytes (`write.spool.max_bytes`, default `max_spool_bytes`) summed over a tenant's
    /// S3 pipelines.
    #[serde(default = "default_spool_bytes_per_tenant")]
    pub spool_bytes_per_tenant: u64,
    /// Bytes the `file` writer may keep on disk for one tenant, over all its pipelines; past it,
    /// writes fail (retried, then `overflow`).
    #[serde(default = "default_file_bytes_per_tenant")]
    pub file_bytes_per_tenant: u64,
    /// `store.buffered.max_flows_per_object` at most.
    #[serde(default = "d_max_flows_per_object")]
    pub max_flows_per_object: u64,
    /// `store.buffered.max_flow_array_size` at most (records held in memory per tag).
    #[serde(default = "d_max_flow_array_size")]
    pub max_flow_array_size: u64,
    /// `store.buffered.max_seconds_per_object` at most.
    #[serde(default = "d_max_seconds_per_object")]
    pub max_seconds_per_object: u64,
    /// `store.buffered.max_seconds_per_stream` at most.
    #[serde(default = "d_max_seconds_per_stream")]
    pub max_seconds_per_stream: u64,
    /// `write.spool.max_objects` at most (and its value when unset).
    #[serde(default = "d_max_spool_objects")]
    pub max_spool_objects: u64,
    /// `write.spool.max_bytes` at most (and its value when unset).
    #[serde(default = "d_max_spool_bytes")]
    pub max_spool_bytes: u64,
    /// `action.reject_timeout` at most (seconds).
    #[serde(default = "d_max_reject_timeout_secs")]
    pub max_reject_timeout_secs: u64,
    /// Entries of any list of a definition (`analyzers`, `cluster_net_masks`, ...) at most.
    #[serde(default = "d_max_list_entries")]
    pub max_list_entries: usize,
    /// Fuel of a guest's batch at most (and its value when the pipeline sets none).
    #[serde(default = "d_wasm_fuel")]
    pub wasm_fuel: u64,
    /// Deadline of a guest's batch at most, in milliseconds.
    #[serde(default = "d_wasm_deadline_ms")]
    pub wasm_deadline_ms: u64,
    /// Memory of a guest instance at most, in bytes.
    #[serde(default = "d_wasm_memory_bytes")]
    pub wasm_memory_bytes: u64,
    /// Bytes a guest may return per batch at most.
    #[serde(default = "d_wasm_output_bytes")]
    pub wasm_output_bytes: u64,
    /// Threads that run guests (0: one per core). Guests never run on the threads that serve
    /// the API and move flows.
    #[serde(default)]
    pub guest_threads: usize,
    /// Guest batches of one tenant running at once (0: half the guest threads, at least 1), so
    /// that one tenant's guests can't hold every guest thread.
    #[serde(default)]
    pub guest_calls_per_tenant: usize,
}

impl Limits {
    /// The ceilings on a pipeline definition.
    pub fn ceilings(&self) -> Ceilings {
        Ceilings {
            max_flows_per_object: self.max_flows_per_object,
            max_flow_array_size: self.max_flow_array_size,
            max_seconds_per_object: self.max_seconds_per_object,
            max_seconds_per_stream: self.max_seconds_per_stream,
            max_spool_objects: self.max_spool_objects,
            max_spool_bytes: self.max_spool_bytes,
            max_reject_timeout_secs: self.max_reject_timeout_secs,
            max_list_entries: self.max_list_entries,
            wasm_fuel: self.wasm_fuel,
            wasm_deadline_ms: self.wasm_deadline_ms,
            wasm_memory_bytes: self.wasm_memory_bytes,
            wasm_output_bytes: self.wasm_output_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: default_max_body_bytes(),
            pipelines_per_tenant: default_pipelines_per_tenant(),
            lease_ttl_secs: default_lease_ttl_secs(),
            account_save_secs: default_account_save_secs(),
            max_module_bytes: default_max_module_bytes(),
            modules_per_tenant: default_modules_per_tenant(),
            module_bytes_per_tenant: default_module_bytes_per_tenant(),
            spool_bytes_per_tenant: default_spool_bytes_per_tenant(),
            file_bytes_per_tenant: default_file_bytes_per_tenant(),
            max_flows_per_object: d_max_flows_per_object(),
            max_flow_array_size: d_max_flow_array_size(),
            max_seconds_per_object: d_max_seconds_per_object(),
            max_seconds_per_stream: d_max_seconds_per_stream(),
            max_spool_objects: d_max_spool_objects(),
            max_spool_bytes: d_max_spool_bytes(),
            max_reject_timeout_secs: d_max_reject_timeout_secs(),
            max_list_entries: d_max_list_entries(),
            wasm_fuel: d_wasm_fuel(),
            wasm_deadline_ms: d_wasm_deadline_ms(),
            wasm_memory_bytes: d_wasm_memory_bytes(),
            wasm_output_bytes: d_wasm_output_bytes(),
            guest_threads: 0,
            guest_calls_per_tenant: 0,
        }
    }
}

fn default_modules_per_tenant() -> u64 {
    50
}

fn default_module_bytes_per_tenant() -> u64 {
    256 << 20
}

fn default_spool_bytes_per_tenant() -> u64 {
    8 << 30
}

fn default_file_bytes_per_tenant() -> u64 {
    8 << 30
}

// The pipeline ceilings' defaults are `Ceilings::default()`'s, one function per key for serde.
macro_rules! ceiling_defaults {
    ($($name:ident: $ty:ty = $field:ident),* $(,)?) => {
        $(fn $name() -> $ty { Ceilings::default().$field })*
    };
}

ceiling_defaults!(
    d_max_flows_per_object: u64 = max_flows_per_object,
    d_max_flow_array_size: u64 = max_flow_array_size,
    d_max_seconds_per_object: u64 = max_seconds_per_object,
    d_max_seconds_per_stream: u64 = max_seconds_per_stream,
    d_max_spool_objects: u64 = max_spool_objects,
    d_max_spool_bytes: u64 = max_spool_bytes,
    d_max_reject_timeout_secs: u64 = max_reject_timeout_secs,
    d_max_list_entries: usize = max_list_entries,
    d_wasm_fuel: u64 = wasm_fuel,
    d_wasm_deadline_ms: u64 = wasm_deadline_ms,
    d_wasm_memory_bytes: u64 = wasm_memory_bytes,
    d_wasm_output_bytes: u64 = wasm_output_bytes,
);

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            data_dir: default_data_dir(),
            admin_token: None,
            database: None,
            node_id: None,
            advertise_address: None,
            allow_absolute_paths: false,
            metrics_token: None,
            limits: Limits::default(),
            egress: EgressConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./sluice-data")
}

fn default_max_body_bytes() -> usize {
    crate::config::MAX_CONFIG_BYTES
}

fn default_pipelines_per_tenant() -> u64 {
    100
}

fn default_lease_ttl_secs() -> u64 {
    15
}

fn default_account_save_secs() -> u64 {
    10
}

fn default_max_module_bytes() -> usize {
    // A Python guest is about 19 MB (an interpreter and its heap snapshot); 32 MiB leaves
    // room for its own code (guest-sdk/README.md has the measured sizes).
    32 << 20
}

impl ServerConfig {
    /// Parses the YAML text of a server config.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let de = serde_yaml::Deserializer::from_str(text);
        let config: Option<ServerConfig> = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!("{path}: {}", e.into_inner())
        })?;
        Ok(config.unwrap_or_default())
    }

    /// Reads a server config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The database URL: `database` (which `SLUICE_DATABASE_URL` and `--database` override
    /// when the config is resolved), else SQLite in the data folder.
    pub fn database_url(&self) -> String {
        self.database
            .as_deref()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| crate::db::sqlite_url(&self.data_dir.join("sluice.db")))
    }

    /// The node id: configured, else the hostname, else `sluice`.
    pub fn node(&self) -> String {
        self.node_id
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "sluice".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses() {
        let text = include_str!("../../../config/sluice.yml");
        let c = ServerConfig::parse(text).unwrap();
        assert_eq!(c.limits.pipelines_per_tenant, 100);
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let err = ServerConfig::parse("limits:\n  max_body: 3\n").unwrap_err();
        assert!(err.to_string().contains("limits.max_body"), "{err}");
    }

    #[test]
    fn empty_file_is_the_default() {
        let c = ServerConfig::parse("").unwrap();
        assert_eq!(c.listen.port(), 8080);
    }
}
