//! The server's own configuration, `config/sluice.yml`: strict (unknown keys are errors), every
//! key documented, every key optional.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Environment variable that sets (and overrides) `admin_token`.
pub const ADMIN_TOKEN_ENV: &str = "SLUICE_ADMIN_TOKEN";

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
    /// This node's id, written on the host_id leases it holds. Default: the hostname.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Allow pipelines to name absolute paths (`write.file.dir`, `account.file.filename`).
    /// Off by default: a tenant's relative paths resolve inside its pipeline's data folder.
    #[serde(default)]
    pub allow_absolute_paths: bool,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
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
    /// Seconds a host_id lease lives without renewal; the holder renews it every third of this.
    #[serde(default = "default_lease_ttl_secs")]
    pub lease_ttl_secs: u64,
    /// Seconds between saves of each pipeline's counters to the `account` table.
    #[serde(default = "default_account_save_secs")]
    pub account_save_secs: u64,
    /// Largest WebAssembly module accepted by `POST /v1/modules` (larger gets 413).
    #[serde(default = "default_max_module_bytes")]
    pub max_module_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: default_max_body_bytes(),
            pipelines_per_tenant: default_pipelines_per_tenant(),
            lease_ttl_secs: default_lease_ttl_secs(),
            account_save_secs: default_account_save_secs(),
            max_module_bytes: default_max_module_bytes(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            data_dir: default_data_dir(),
            admin_token: None,
            node_id: None,
            allow_absolute_paths: false,
            limits: Limits::default(),
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
    30
}

fn default_account_save_secs() -> u64 {
    10
}

fn default_max_module_bytes() -> usize {
    16 << 20
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
