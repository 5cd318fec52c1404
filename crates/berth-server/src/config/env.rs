//! The settings berth server takes from the environment only — keys and secrets never go on a
//! command line or into the TOML file, and a few operator knobs live beside them — read once, at
//! start-up, into [`EnvSettings`]. [`EnvVars`] is the one table of their names (with the flag
//! variables of [`super::ServerArgs`] it is every variable the server reads); a test checks
//! `docs/configuration.md` against both.

use std::path::PathBuf;

use berth_domain::Secret;

/// Names of the environment-only variables.
pub struct EnvVars;

impl EnvVars {
    pub const ANTHROPIC_BASE_URL: &'static str = "BERTH_ANTHROPIC_BASE_URL";
    pub const OPENAI_BASE_URL: &'static str = "BERTH_OPENAI_BASE_URL";
    pub const GEMINI_BASE_URL: &'static str = "BERTH_GEMINI_BASE_URL";
    pub const ANTHROPIC_API_KEY: &'static str = "BERTH_ANTHROPIC_API_KEY";
    pub const OPENAI_API_KEY: &'static str = "BERTH_OPENAI_API_KEY";
    pub const GEMINI_API_KEY: &'static str = "BERTH_GEMINI_API_KEY";
    pub const SECRETS_KEY: &'static str = "BERTH_SECRETS_KEY";
    pub const SECRETS_KEY_FILE: &'static str = "BERTH_SECRETS_KEY_FILE";
    pub const EGRESS_HOSTS: &'static str = "BERTH_EGRESS_HOSTS";
    pub const EGRESS_TUNNEL_IDLE_SECS: &'static str = "BERTH_EGRESS_TUNNEL_IDLE_SECS";
    pub const EGRESS_EXTRA_CA: &'static str = "BERTH_EGRESS_EXTRA_CA";
    pub const GATEWAY_RESERVE_OUTPUT_TOKENS: &'static str = "BERTH_GATEWAY_RESERVE_OUTPUT_TOKENS";
    pub const GATEWAY_RECORD_DAYS: &'static str = "BERTH_GATEWAY_RECORD_DAYS";
    pub const BOOTSTRAP_TOKEN: &'static str = "BERTH_BOOTSTRAP_TOKEN";
    pub const OIDC_CLIENT_SECRET: &'static str = "BERTH_OIDC_CLIENT_SECRET";
    pub const NOTIFY_ALLOW_PRIVATE: &'static str = "BERTH_NOTIFY_ALLOW_PRIVATE";
    pub const NOTIFY_RETRY_BASE_MS: &'static str = "BERTH_NOTIFY_RETRY_BASE_MS";
    pub const NOTIFY_MAX_ATTEMPTS: &'static str = "BERTH_NOTIFY_MAX_ATTEMPTS";
    pub const NOTIFY_BUDGET_NEAR_PERCENT: &'static str = "BERTH_NOTIFY_BUDGET_NEAR_PERCENT";
    pub const VAPID_SUBJECT: &'static str = "BERTH_VAPID_SUBJECT";
    pub const VAPID_KEY_FILE: &'static str = "BERTH_VAPID_KEY_FILE";
    pub const GITHUB_API_URL: &'static str = "BERTH_GITHUB_API_URL";
    pub const GITLAB_API_URL: &'static str = "BERTH_GITLAB_API_URL";
    pub const AZURE_DEVOPS_API_URL: &'static str = "BERTH_AZURE_DEVOPS_API_URL";
}

/// One LLM provider's upstream as configured (`None`: not set).
#[derive(Debug, Clone, Default)]
pub struct UpstreamEnv {
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
}

/// The environment-only settings, raw (each consumer validates its own; empty counts as unset).
#[derive(Debug, Clone, Default)]
pub struct EnvSettings {
    pub anthropic: UpstreamEnv,
    pub openai: UpstreamEnv,
    pub gemini: UpstreamEnv,
    /// The vault key as 64 hex digits.
    pub secrets_key: Option<Secret>,
    /// The vault key's file (default `DATA_DIR/secrets.key`).
    pub secrets_key_file: Option<PathBuf>,
    /// `name=ip,…` resolved by the egress proxy before DNS.
    pub egress_hosts: Option<String>,
    pub egress_tunnel_idle_secs: Option<String>,
    /// `:`-separated PEM files the proxy trusts for inspected upstreams.
    pub egress_extra_ca: Option<String>,
    pub gateway_reserve_output_tokens: Option<String>,
    pub gateway_record_days: Option<String>,
    /// The first admin token.
    pub bootstrap_token: Option<Secret>,
    /// The OpenID Provider's client secret for berth (single sign-on).
    pub oidc_client_secret: Option<Secret>,
    /// `1`: notifications may go to loopback, private and link-local addresses.
    pub notify_allow_private: Option<String>,
    /// The first retry's delay of a notification, in milliseconds (each next one doubles).
    pub notify_retry_base_ms: Option<String>,
    /// Attempts per notification delivery.
    pub notify_max_attempts: Option<String>,
    /// The share (percent) of a budget that raises `budget.near`.
    pub notify_budget_near_percent: Option<String>,
    /// The contact Web Push services see (`mailto:` or `https:`).
    pub vapid_subject: Option<String>,
    /// berth's Web Push (VAPID) key file (default `DATA_DIR/vapid.key`).
    pub vapid_key_file: Option<PathBuf>,
    /// The pull-request providers' API bases (self-hosted instances, tests).
    pub forges: ForgeEnv,
}

/// Where berth calls each pull-request provider's API (`None`: its public service).
#[derive(Debug, Clone, Default)]
pub struct ForgeEnv {
    pub github_api: Option<String>,
    pub gitlab_api: Option<String>,
    pub azure_devops_api: Option<String>,
}

impl EnvSettings {
    /// Reads the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| get(name).filter(|v| !v.is_empty());
        let upstream = |url: &str, key: &str| UpstreamEnv {
            base_url: var(url),
            api_key: var(key).map(Secret::new),
        };
        Self {
            anthropic: upstream(EnvVars::ANTHROPIC_BASE_URL, EnvVars::ANTHROPIC_API_KEY),
            openai: upstream(EnvVars::OPENAI_BASE_URL, EnvVars::OPENAI_API_KEY),
            gemini: upstream(EnvVars::GEMINI_BASE_URL, EnvVars::GEMINI_API_KEY),
            secrets_key: var(EnvVars::SECRETS_KEY).map(Secret::new),
            secrets_key_file: var(EnvVars::SECRETS_KEY_FILE).map(PathBuf::from),
            egress_hosts: var(EnvVars::EGRESS_HOSTS),
            egress_tunnel_idle_secs: var(EnvVars::EGRESS_TUNNEL_IDLE_SECS),
            egress_extra_ca: var(EnvVars::EGRESS_EXTRA_CA),
            gateway_reserve_output_tokens: var(EnvVars::GATEWAY_RESERVE_OUTPUT_TOKENS),
            gateway_record_days: var(EnvVars::GATEWAY_RECORD_DAYS),
            bootstrap_token: var(EnvVars::BOOTSTRAP_TOKEN).map(Secret::new),
            oidc_client_secret: var(EnvVars::OIDC_CLIENT_SECRET).map(Secret::new),
            notify_allow_private: var(EnvVars::NOTIFY_ALLOW_PRIVATE),
            notify_retry_base_ms: var(EnvVars::NOTIFY_RETRY_BASE_MS),
            notify_max_attempts: var(EnvVars::NOTIFY_MAX_ATTEMPTS),
            notify_budget_near_percent: var(EnvVars::NOTIFY_BUDGET_NEAR_PERCENT),
            vapid_subject: var(EnvVars::VAPID_SUBJECT),
            vapid_key_file: var(EnvVars::VAPID_KEY_FILE).map(PathBuf::from),
            forges: ForgeEnv {
                github_api: var(EnvVars::GITHUB_API_URL),
                gitlab_api: var(EnvVars::GITLAB_API_URL),
                azure_devops_api: var(EnvVars::AZURE_DEVOPS_API_URL),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::CommandFactory;

    use super::*;

    /// Every environment-only variable.
    const ENV_ONLY: &[&str] = &[
        EnvVars::ANTHROPIC_BASE_URL,
        EnvVars::OPENAI_BASE_URL,
        EnvVars::GEMINI_BASE_URL,
        EnvVars::ANTHROPIC_API_KEY,
        EnvVars::OPENAI_API_KEY,
        EnvVars::GEMINI_API_KEY,
        EnvVars::SECRETS_KEY,
        EnvVars::SECRETS_KEY_FILE,
        EnvVars::EGRESS_HOSTS,
        EnvVars::EGRESS_TUNNEL_IDLE_SECS,
        EnvVars::EGRESS_EXTRA_CA,
        EnvVars::GATEWAY_RESERVE_OUTPUT_TOKENS,
        EnvVars::GATEWAY_RECORD_DAYS,
        EnvVars::BOOTSTRAP_TOKEN,
        EnvVars::OIDC_CLIENT_SECRET,
        EnvVars::NOTIFY_ALLOW_PRIVATE,
        EnvVars::NOTIFY_RETRY_BASE_MS,
        EnvVars::NOTIFY_MAX_ATTEMPTS,
        EnvVars::NOTIFY_BUDGET_NEAR_PERCENT,
        EnvVars::VAPID_SUBJECT,
        EnvVars::VAPID_KEY_FILE,
        EnvVars::GITHUB_API_URL,
        EnvVars::GITLAB_API_URL,
        EnvVars::AZURE_DEVOPS_API_URL,
    ];

    #[derive(clap::Parser)]
    struct Probe {
        #[command(flatten)]
        args: super::super::ServerArgs,
    }

    /// Every variable the server reads: the environment-only ones and the flags' variables.
    fn all_names() -> Vec<String> {
        let mut names: Vec<String> = ENV_ONLY.iter().map(|s| (*s).to_owned()).collect();
        for a in Probe::command().get_arguments() {
            if let Some(env) = a.get_env() {
                names.push(env.to_string_lossy().into_owned());
            }
        }
        names
    }

    #[test]
    fn reads_each_name_and_treats_empty_as_unset() {
        let vars: HashMap<&str, &str> = [
            (EnvVars::OPENAI_BASE_URL, "http://127.0.0.1:9/v1"),
            (EnvVars::GEMINI_API_KEY, "g-key"),
            (EnvVars::SECRETS_KEY, ""),
            (EnvVars::EGRESS_HOSTS, "a.test=127.0.0.1"),
            (EnvVars::BOOTSTRAP_TOKEN, "berth_x"),
        ]
        .into_iter()
        .collect();
        let s = EnvSettings::from_lookup(|n| vars.get(n).map(|v| (*v).to_owned()));
        assert_eq!(s.openai.base_url.as_deref(), Some("http://127.0.0.1:9/v1"));
        assert_eq!(s.gemini.api_key.as_ref().map(Secret::expose), Some("g-key"));
        assert!(s.secrets_key.is_none());
        assert_eq!(s.egress_hosts.as_deref(), Some("a.test=127.0.0.1"));
        assert_eq!(
            s.bootstrap_token.as_ref().map(Secret::expose),
            Some("berth_x")
        );
        assert!(s.anthropic.base_url.is_none() && s.anthropic.api_key.is_none());
        // Secrets never reach a log through Debug.
        assert!(!format!("{s:?}").contains("g-key"));
    }

    /// The configuration page names every variable the server reads, and nothing the server
    /// does not read.
    #[test]
    fn configuration_docs_match_the_table() {
        let doc = include_str!("../../../../docs/configuration.md");
        let names = all_names();
        for n in &names {
            assert!(
                doc.contains(&format!("`{n}`")),
                "docs/configuration.md does not name `{n}`"
            );
        }
        let mut rest = doc;
        while let Some(i) = rest.find("`BERTH_") {
            let tail = &rest[i + 1..];
            let end = tail.find('`').unwrap_or(tail.len());
            let name = &tail[..end];
            let known = names.iter().any(|n| n == name)
                // The binary's log filter (read before any configuration) and the CLI's
                // variables, documented alongside.
                || ["BERTH_LOG", "BERTH_URL", "BERTH_TOKEN"].contains(&name);
            assert!(
                known,
                "docs/configuration.md names `{name}`, which berth server does not read"
            );
            rest = &tail[end..];
        }
    }
}
