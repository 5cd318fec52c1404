//! The LLM gateway ([`berth_gateway`]) as the server wires it: its settings from the server's
//! environment, and the vault as the source of upstream keys kept there (`vault:TENANT/NAME`).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use berth_domain::{Provider, Secret};
use berth_gateway::{GatewayConfig, Upstream, Upstreams};
use berth_store::Store;

pub use berth_gateway::period_start;

/// The gateway's settings: `BERTH_{ANTHROPIC,OPENAI,GEMINI}_{BASE_URL,API_KEY}` (empty: unset),
/// `BERTH_GATEWAY_RECORD_DAYS` (prompt recording, off unless a positive number),
/// `BERTH_GATEWAY_RESERVE_OUTPUT_TOKENS` (a positive number, else the default) and the price
/// table `DATA_DIR/prices.toml`.
pub fn config_from_env(data_dir: &Path) -> GatewayConfig {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let upstream = |p: Provider| {
        let name = p.as_str().to_ascii_uppercase();
        Upstream {
            base_url: var(&format!("BERTH_{name}_BASE_URL"))
                .unwrap_or_else(|| Upstreams::default_base_url(p).to_owned()),
            api_key: var(&format!("BERTH_{name}_API_KEY")).map(Secret::new),
        }
    };
    GatewayConfig {
        upstreams: Upstreams {
            anthropic: upstream(Provider::Anthropic),
            openai: upstream(Provider::Openai),
            gemini: upstream(Provider::Gemini),
        },
        recording_days: positive(var("BERTH_GATEWAY_RECORD_DAYS")),
        reserve_output: positive(var("BERTH_GATEWAY_RESERVE_OUTPUT_TOKENS"))
            .unwrap_or(berth_gateway::DEFAULT_RESERVE_OUTPUT),
        prices_file: data_dir.join("prices.toml"),
    }
}

/// A positive number, else nothing.
fn positive<T: std::str::FromStr + PartialOrd + Default>(v: Option<String>) -> Option<T> {
    v.and_then(|v| v.trim().parse().ok())
        .filter(|n: &T| *n > T::default())
}

/// The vault as the gateway's source of upstream keys.
pub struct VaultKeys {
    pub store: Store,
    pub vault: Arc<crate::vault::Vault>,
}

#[async_trait]
impl berth_gateway::SecretSource for VaultKeys {
    async fn reveal(&self, tenant: &str, name: &str) -> anyhow::Result<Secret> {
        crate::secrets::reveal(&self.store, &self.vault, tenant, name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_positive_numbers_count() {
        assert_eq!(positive::<u32>(Some(" 7 ".into())), Some(7));
        assert_eq!(positive::<u32>(Some("0".into())), None);
        assert_eq!(positive::<u64>(Some("-3".into())), None);
        assert_eq!(positive::<u64>(Some("many".into())), None);
        assert_eq!(positive::<u64>(None), None);
    }
}
