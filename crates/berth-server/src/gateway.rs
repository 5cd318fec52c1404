//! The LLM gateway ([`berth_gateway`]) as the server wires it: its settings from the server's
//! configuration, and the vault as the source of upstream keys kept there (`vault:TENANT/NAME`).

use std::sync::Arc;

use async_trait::async_trait;
use berth_domain::{Provider, Secret};
use berth_gateway::{GatewayConfig, Upstream, Upstreams};
use berth_store::Store;

use crate::config::{Config, UpstreamEnv};

pub use berth_gateway::period_start;

/// The gateway's settings from the server's: the upstreams
/// (`BERTH_{ANTHROPIC,OPENAI,GEMINI}_{BASE_URL,API_KEY}`), prompt recording
/// (`BERTH_GATEWAY_RECORD_DAYS`, off unless a positive number), the output reservation
/// (`BERTH_GATEWAY_RESERVE_OUTPUT_TOKENS`, a positive number, else the default) and the price
/// table `DATA_DIR/prices.toml`.
pub fn config(config: &Config) -> GatewayConfig {
    let env = &config.env;
    let upstream = |p: Provider, u: &UpstreamEnv| Upstream {
        base_url: u
            .base_url
            .clone()
            .unwrap_or_else(|| Upstreams::default_base_url(p).to_owned()),
        api_key: u.api_key.clone(),
    };
    GatewayConfig {
        upstreams: Upstreams {
            anthropic: upstream(Provider::Anthropic, &env.anthropic),
            openai: upstream(Provider::Openai, &env.openai),
            gemini: upstream(Provider::Gemini, &env.gemini),
        },
        recording_days: positive(env.gateway_record_days.clone()),
        reserve_output: positive(env.gateway_reserve_output_tokens.clone())
            .unwrap_or(berth_gateway::DEFAULT_RESERVE_OUTPUT),
        prices_file: config.data_dir.join("prices.toml"),
    }
}

/// A provider's environment variables: (its API key, its base URL).
pub fn provider_env(p: Provider) -> (&'static str, &'static str) {
    use crate::config::EnvVars as V;
    match p {
        Provider::Anthropic => (V::ANTHROPIC_API_KEY, V::ANTHROPIC_BASE_URL),
        Provider::Openai => (V::OPENAI_API_KEY, V::OPENAI_BASE_URL),
        Provider::Gemini => (V::GEMINI_API_KEY, V::GEMINI_BASE_URL),
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
