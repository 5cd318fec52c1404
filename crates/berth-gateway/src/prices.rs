//! What a call costs: berth's shipped price table (`crates/berth-gateway/prices.toml`, compiled
//! in), the operator's `DATA_DIR/prices.toml` over it, and a fallback price for models neither
//! lists. Costs are exact integers of nano-USD (10⁻⁹ USD), so the sums of the same calls agree
//! to the last digit however they are grouped (per task, workspace, tenant, model or day).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

use serde::Deserialize;

use crate::usage_tap::Tokens;

/// USD per million tokens.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens read fresh (not from the provider's cache).
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    /// Prompt tokens served from the provider's prompt cache.
    #[serde(default)]
    pub cache_read: f64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic).
    #[serde(default)]
    pub cache_write: f64,
}

impl Price {
    fn is_sane(&self) -> bool {
        [self.input, self.output, self.cache_read, self.cache_write]
            .iter()
            .all(|p| p.is_finite() && (0.0..=1e6).contains(p))
    }
}

/// Price of a model no table lists, unless the operator's table sets its own `[fallback]`: as
/// dear as the dearest published models, so that an unknown or new model name is never free
/// by accident (a budget in dollars still holds). `[fallback]` with zeros makes them free on
/// purpose. Calls priced so are flagged (`priced: "fallback"`).
pub const DEFAULT_FALLBACK: Price = Price {
    input: 15.0,
    output: 75.0,
    cache_read: 1.5,
    cache_write: 18.75,
};

/// Which price a call was charged at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSource {
    /// The operator's `DATA_DIR/prices.toml` lists the model.
    Operator,
    /// berth's shipped table lists it.
    Default,
    /// Neither does: the fallback price.
    Fallback,
}

impl PriceSource {
    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Default => "default",
            Self::Fallback => "fallback",
        }
    }
}

/// The cost of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    /// In nano-USD (10⁻⁹ USD), rounded to the nearest.
    pub cost_nusd: u64,
    /// Which price applied; None when the call used no tokens (nothing was priced).
    pub source: Option<PriceSource>,
}

impl Quote {
    pub fn usd(&self) -> f64 {
        self.cost_nusd as f64 / 1e9
    }
}

/// The shipped table, parsed once (a unit test makes sure it parses).
static SHIPPED: LazyLock<HashMap<String, Price>> =
    LazyLock::new(
        || match toml::from_str::<PriceFile>(include_str!("../prices.toml")) {
            Ok(f) => f.models,
            Err(e) => {
                tracing::error!(error = %e, "berth's shipped price table does not parse");
                HashMap::new()
            }
        },
    );

/// The price tables: the operator's file `DATA_DIR/prices.toml` (`[models."<model>"] input = 3.0
/// …`, USD per million tokens, and an optional `[fallback]`), re-read when it changes, over the
/// shipped table. A model is looked up by the name the upstream reports, first as given, then
/// without a date suffix (`-20250929`, `-2026-04-23`) or `-latest`: the operator's table
/// first, then the shipped one; otherwise the fallback applies.
pub struct Prices {
    path: PathBuf,
    check_every: std::time::Duration,
    cache: Mutex<PriceCache>,
}

/// The parsed operator table, the file's modification time it was read at, and when that was
/// checked.
#[derive(Default)]
struct PriceCache {
    mtime: Option<std::time::SystemTime>,
    checked: Option<std::time::Instant>,
    table: HashMap<String, Price>,
    fallback: Option<Price>,
}

/// How often the price file's modification time is looked at (edits apply within this time).
const PRICES_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(default)]
    models: HashMap<String, Price>,
    fallback: Option<Price>,
}

impl PriceFile {
    /// A table with a negative, huge or non-finite price is refused as a whole.
    fn check(&self) -> Result<(), String> {
        for (name, p) in &self.models {
            if !p.is_sane() {
                return Err(format!(
                    "model {name:?}: prices must be between 0 and 1000000 USD per million tokens"
                ));
            }
        }
        match self.fallback {
            Some(p) if !p.is_sane() => Err(
                "[fallback]: prices must be between 0 and 1000000 USD per million tokens".into(),
            ),
            _ => Ok(()),
        }
    }
}

/// `model` without a trailing date (`-YYYYMMDD`, `-YYYY-MM-DD`) or `-latest`, if it has one.
fn undated(model: &str) -> Option<&str> {
    if let Some(base) = model.strip_suffix("-latest") {
        return Some(base);
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let (base, tail) = model.rsplit_once('-')?;
    if tail.len() == 8 && digits(tail) {
        return Some(base);
    }
    // -YYYY-MM-DD: three dash-separated groups of 4, 2 and 2 digits at the end.
    let mut parts = model.rsplitn(4, '-');
    let (d, m, y, base) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let dated = y.len() == 4 && m.len() == 2 && d.len() == 2 && digits(y) && digits(m) && digits(d);
    dated.then_some(base)
}

impl Prices {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            check_every: PRICES_CHECK,
            cache: Mutex::new(PriceCache::default()),
        }
    }

    /// The cost of `t` tokens of `model` (None: the upstream did not say, so the fallback).
    pub fn quote(&self, model: Option<&str>, t: Tokens) -> Quote {
        if t == Tokens::default() {
            return Quote {
                cost_nusd: 0,
                source: None,
            };
        }
        let (p, source) = self.price(model);
        // Pico-USD per token (the price per million tokens × 10⁶), exact for prices with up to
        // six decimals; products in u128 cannot overflow.
        let per_token = |usd_per_mtok: f64| (usd_per_mtok * 1e6).round().max(0.0) as u128;
        let fresh = t
            .input
            .saturating_sub(t.cache_read)
            .saturating_sub(t.cache_write);
        let pico = u128::from(fresh) * per_token(p.input)
            + u128::from(t.output) * per_token(p.output)
            + u128::from(t.cache_read) * per_token(p.cache_read)
            + u128::from(t.cache_write) * per_token(p.cache_write);
        let nano = (pico + 500) / 1000;
        Quote {
            cost_nusd: u64::try_from(nano).unwrap_or(u64::MAX),
            source: Some(source),
        }
    }

    /// The cost of `t` tokens of `model` in USD (see [`Prices::quote`]).
    pub fn cost(&self, model: Option<&str>, t: Tokens) -> f64 {
        self.quote(model, t).usd()
    }

    /// The price of a model and where it comes from.
    pub fn price(&self, model: Option<&str>) -> (Price, PriceSource) {
        let cache = self.fresh();
        let names = model
            .map(|m| m.strip_prefix("models/").unwrap_or(m))
            .map(|m| [Some(m), undated(m)]);
        if let Some(names) = names {
            for (table, source) in [
                (&cache.table, PriceSource::Operator),
                (&*SHIPPED, PriceSource::Default),
            ] {
                if let Some(p) = names.iter().flatten().find_map(|n| table.get(*n)) {
                    return (*p, source);
                }
            }
        }
        (
            cache.fallback.unwrap_or(DEFAULT_FALLBACK),
            PriceSource::Fallback,
        )
    }

    /// The operator's table, re-read when the file changed (looked at once per `check_every`).
    fn fresh(&self) -> std::sync::MutexGuard<'_, PriceCache> {
        let mut cache = berth_domain::sync::lock(&self.cache);
        if cache
            .checked
            .is_none_or(|at| at.elapsed() >= self.check_every)
        {
            cache.checked = Some(std::time::Instant::now());
            let mtime = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            if cache.mtime != mtime {
                let file = std::fs::read_to_string(&self.path).ok().and_then(|s| {
                    match toml::from_str::<PriceFile>(&s)
                        .map_err(|e| e.to_string())
                        .and_then(|f| f.check().map(|()| f))
                    {
                        Ok(f) => Some(f),
                        Err(e) => {
                            tracing::warn!(path = %self.path.display(), error = %e, "ignoring the operator's price table");
                            None
                        }
                    }
                });
                (cache.table, cache.fallback) = match file {
                    Some(f) => (f.models, f.fallback),
                    None => (HashMap::new(), None),
                };
                cache.mtime = mtime;
            }
        }
        cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: u64, output: u64) -> Tokens {
        Tokens {
            input,
            output,
            ..Tokens::default()
        }
    }

    #[test]
    fn the_shipped_table_parses_and_covers_the_agents_defaults() {
        let f: PriceFile = toml::from_str(include_str!("../prices.toml")).unwrap();
        f.check().unwrap();
        assert!(
            f.fallback.is_none(),
            "the fallback is the operator's to set"
        );
        assert_eq!(SHIPPED.len(), f.models.len());
        // The default models of the four agent CLIs as berth runs them, and the ones they use
        // for side calls.
        for m in [
            "claude-opus-5-5",
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            "gpt-5.5",
            "gemini-2.5-pro",
            "gemini-2.5-flash-lite",
        ] {
            assert!(SHIPPED.contains_key(m), "{m}");
        }
        // Anthropic's published opus 5.5 price: $4 in, $20 out per million.
        let p = Prices::new("/nonexistent/prices.toml".into());
        let q = p.quote(Some("claude-opus-5-5"), tokens(20, 10));
        assert_eq!(q.cost_nusd, 20 * 4_000 + 10 * 20_000);
        assert_eq!(q.source, Some(PriceSource::Default));
    }

    #[test]
    fn dated_ids_and_aliases_find_their_model() {
        assert_eq!(undated("claude-x-20250929"), Some("claude-x"));
        assert_eq!(undated("gpt-5.5-2026-04-23"), Some("gpt-5.5"));
        assert_eq!(
            undated("claude-3-7-sonnet-latest"),
            Some("claude-3-7-sonnet")
        );
        for none in [
            "gpt-5.5",
            "claude-opus-4-5",
            "x-2026-4-23",
            "a-1234567",
            "-",
        ] {
            assert_eq!(undated(none), None, "{none}");
        }
        let p = Prices::new("/nonexistent/prices.toml".into());
        let t = tokens(1_000_000, 0);
        assert_eq!(p.cost(Some("gpt-5.5-2026-04-23"), t), 5.0);
        assert_eq!(p.cost(Some("models/gemini-2.5-pro"), t), 1.25);
        assert_eq!(
            p.price(Some("claude-sonnet-4-6-20260101")).1,
            PriceSource::Default
        );
    }

    #[test]
    fn cached_tokens_are_part_of_the_input_and_priced_apart() {
        let p = Prices::new("/nonexistent/prices.toml".into());
        // claude-sonnet-4-5: fresh 3, cache read 0.3, cache write 3.75, output 15 per MTok.
        let t = Tokens {
            input: 1_000_000 + 2_000_000 + 400_000,
            output: 100_000,
            cache_read: 2_000_000,
            cache_write: 400_000,
        };
        let q = p.quote(Some("claude-sonnet-4-5"), t);
        assert_eq!(
            q.cost_nusd,
            3_000_000_000 + 600_000_000 + 1_500_000_000 + 1_500_000_000
        );
        // A cache larger than the input (a lying count) never goes below zero fresh tokens.
        let odd = Tokens {
            input: 1,
            cache_read: 10,
            ..Tokens::default()
        };
        assert_eq!(p.quote(Some("gpt-5.5"), odd).cost_nusd, 5_000);
        // No tokens: nothing priced, not even by the fallback.
        let none = p.quote(Some("who-knows"), Tokens::default());
        assert_eq!((none.cost_nusd, none.source), (0, None));
        // Huge counts saturate instead of wrapping.
        let huge = tokens(u64::MAX, u64::MAX);
        assert_eq!(p.quote(None, huge).cost_nusd, u64::MAX);
    }

    #[test]
    fn the_operator_table_overrides_and_its_fallback_replaces_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.toml");
        let mut prices = Prices::new(path.clone());
        prices.check_every = std::time::Duration::from_millis(20);
        let settle = || std::thread::sleep(std::time::Duration::from_millis(30));
        let t = tokens(1_000_000, 500_000);
        // No file: unknown models cost the built-in fallback, never 0 by accident.
        let dear = 15.0 + 0.5 * 75.0;
        assert_eq!(prices.cost(Some("m1"), t), dear);
        assert_eq!(prices.cost(None, t), dear);
        assert_eq!(prices.price(Some("m1")).1, PriceSource::Fallback);
        assert_eq!(prices.cost(Some("gpt-5.5"), t), 5.0 + 15.0);
        std::fs::write(
            &path,
            "[models.m1]\ninput = 3.0\noutput = 15.0\n[models.\"gpt-5.5\"]\ninput = 1.0\noutput = 2.0\n",
        )
        .unwrap();
        settle();
        assert_eq!(prices.cost(Some("m1"), t), 3.0 + 7.5);
        assert_eq!(prices.price(Some("m1")).1, PriceSource::Operator);
        assert_eq!(prices.cost(Some("other"), t), dear);
        // The operator's undated name wins over the shipped dated one.
        assert_eq!(prices.cost(Some("gpt-5.5-2026-04-23"), t), 1.0 + 1.0);
        // An edit is picked up at the next check; the table's own fallback replaces the default.
        std::fs::write(
            &path,
            "[models.m1]\ninput = 1.0\noutput = 1.0\n[fallback]\ninput = 2.0\noutput = 4.0\n",
        )
        .unwrap();
        settle();
        assert_eq!(prices.cost(Some("m1"), t), 1.0 + 0.5);
        assert_eq!(prices.cost(Some("alias-x"), t), 2.0 + 2.0);
        // A broken table, or one with a negative price, falls back to the default, not to free.
        for broken in ["[models.m1\n", "[models.m1]\ninput = -1.0\n"] {
            std::fs::write(&path, broken).unwrap();
            settle();
            assert_eq!(prices.cost(Some("m1"), t), dear, "{broken}");
        }
    }
}
