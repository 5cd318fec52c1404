//! Budgets that hold under parallel calls: each metered call reserves its estimated tokens and
//! cost against every budget that applies before it goes upstream, and gives the reservation
//! back only once its real usage is committed to the store.
//!
//! A call is admitted while `spent + reserved < limit` for each applicable budget (so the
//! first call is let through even when its own estimate is larger than what is left). With
//! every call using at most what it reserved, the calls in flight can overshoot a budget by at
//! most one reservation, however many run in parallel. Reading budgets or spending from the
//! store failing refuses the call (fail closed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_store::{Budget, Spent};

use crate::usage_tap::Tokens;

/// The most output tokens one call may generate, and so reserve, unless configured (the
/// server's `BERTH_GATEWAY_RESERVE_OUTPUT_TOKENS`): the gateway lowers (or sets) every generating
/// call's output cap to it, so the upstream never returns more than was reserved. Claude Code
/// asks for 32,000 by default.
pub const DEFAULT_RESERVE_OUTPUT: u64 = 32_000;

/// What one call holds against a budget.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Amount {
    pub tokens: u64,
    pub cost_usd: f64,
}

impl Amount {
    fn add(&mut self, o: Amount) {
        self.tokens = self.tokens.saturating_add(o.tokens);
        self.cost_usd += o.cost_usd;
    }

    fn sub(&mut self, o: Amount) {
        self.tokens = self.tokens.saturating_sub(o.tokens);
        self.cost_usd = (self.cost_usd - o.cost_usd).max(0.0);
    }
}

/// A budget's key: scope and target.
type BudgetKey = (String, String);

fn key(b: &Budget) -> BudgetKey {
    (b.scope.clone(), b.target.clone())
}

/// The reservations of the calls in flight, per budget.
pub struct Reservations {
    /// Serializes admissions, so two calls never both see the same room.
    admit: tokio::sync::Mutex<()>,
    held: Arc<Mutex<HashMap<BudgetKey, Amount>>>,
    /// Largest output reservation per call.
    pub reserve_output: u64,
}

impl Reservations {
    /// No reservations yet; a call reserves at most `reserve_output` output tokens.
    pub fn new(reserve_output: u64) -> Self {
        Self {
            admit: tokio::sync::Mutex::new(()),
            held: Arc::default(),
            reserve_output,
        }
    }
}

impl Default for Reservations {
    fn default() -> Self {
        Self::new(DEFAULT_RESERVE_OUTPUT)
    }
}

/// A call's reservation; given back when dropped (after its usage is stored).
#[derive(Debug)]
pub struct Reservation {
    held: Arc<Mutex<HashMap<BudgetKey, Amount>>>,
    keys: Vec<BudgetKey>,
    amount: Amount,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut held = berth_domain::sync::lock(&self.held);
        for k in &self.keys {
            if let Some(a) = held.get_mut(k) {
                a.sub(self.amount);
                if a.tokens == 0 && a.cost_usd <= 0.0 {
                    held.remove(k);
                }
            }
        }
    }
}

/// Why a call is not admitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// The budget is used up: the task ends `failed{budget_exceeded}`.
    Exceeded(String),
    /// What is left is reserved by calls in flight: retry once they settle.
    Busy(String),
}

/// The verdict for one budget: `spent` as stored, `held` by calls in flight.
pub fn judge(b: &Budget, spent: Spent, held: Amount) -> Result<(), Refused> {
    let who = if b.scope == "tenant" {
        format!("tenant {}", b.target)
    } else {
        "this workspace".to_owned()
    };
    let per = match b.period.as_str() {
        "day" => " today",
        "month" => " this month",
        _ => "",
    };
    if let Some(max) = b.max_tokens {
        if spent.tokens >= max {
            return Err(Refused::Exceeded(format!(
                "token budget exceeded for {who}: {} of {max} tokens used{per}",
                spent.tokens
            )));
        }
        if spent.tokens.saturating_add(held.tokens) >= max {
            return Err(Refused::Busy(format!(
                "token budget of {who} is reserved by calls in flight ({} used, {} reserved of {max}); retry shortly",
                spent.tokens, held.tokens
            )));
        }
    }
    if let Some(max) = b.max_cost_usd {
        if spent.cost_usd >= max {
            return Err(Refused::Exceeded(format!(
                "cost budget exceeded for {who}: ${:.4} of ${max:.2} used{per}",
                spent.cost_usd
            )));
        }
        if spent.cost_usd + held.cost_usd >= max {
            return Err(Refused::Busy(format!(
                "cost budget of {who} is reserved by calls in flight (${:.4} used, ${:.4} reserved of ${max:.2}); retry shortly",
                spent.cost_usd, held.cost_usd
            )));
        }
    }
    Ok(())
}

impl Reservations {
    /// Admits a call against `budgets` (those that apply to its workspace) and reserves
    /// `amount` on each; `spent` reads what a budget has used in its period from the store.
    pub async fn admit<F, Fut>(
        &self,
        budgets: &[Budget],
        amount: Amount,
        spent: F,
    ) -> anyhow::Result<Result<Reservation, Refused>>
    where
        F: Fn(Budget) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Spent>>,
    {
        let _one_at_a_time = self.admit.lock().await;
        // Reservations are read before spending: a call that settles in between is counted
        // twice (refusing early), never not at all.
        let held: Vec<Amount> = {
            let held = berth_domain::sync::lock(&self.held);
            budgets
                .iter()
                .map(|b| held.get(&key(b)).copied().unwrap_or_default())
                .collect()
        };
        for (b, h) in budgets.iter().zip(held) {
            let s = spent(b.clone()).await?;
            if let Err(r) = judge(b, s, h) {
                return Ok(Err(r));
            }
        }
        let keys: Vec<BudgetKey> = budgets.iter().map(key).collect();
        let mut held = berth_domain::sync::lock(&self.held);
        for k in &keys {
            held.entry(k.clone()).or_default().add(amount);
        }
        Ok(Ok(Reservation {
            held: self.held.clone(),
            keys,
            amount,
        }))
    }

    /// What calls in flight hold against a budget.
    #[cfg(test)]
    pub fn held(&self, b: &Budget) -> Amount {
        let held = berth_domain::sync::lock(&self.held);
        held.get(&key(b)).copied().unwrap_or_default()
    }
}

/// Tokens a call is expected to use at most: its body at 4 bytes a token (prompts are mostly
/// text and JSON), plus the output it asks for, capped at `reserve_output` (or that when it
/// names no cap).
pub fn estimate(body: &[u8], reserve_output: u64) -> Tokens {
    let input = (body.len() as u64).div_ceil(4);
    let asked = requested_output(body).unwrap_or(reserve_output);
    Tokens {
        input,
        output: asked.min(reserve_output),
        ..Tokens::default()
    }
}

/// The output cap a request names, in any of the providers' spellings.
fn requested_output(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Caps {
        max_tokens: Option<u64>,
        max_output_tokens: Option<u64>,
        max_completion_tokens: Option<u64>,
        #[serde(rename = "generationConfig")]
        generation_config: Option<GenerationConfig>,
    }
    #[derive(serde::Deserialize)]
    struct GenerationConfig {
        #[serde(rename = "maxOutputTokens")]
        max_output_tokens: Option<u64>,
    }
    let c: Caps = serde_json::from_slice(body).ok()?;
    c.max_tokens
        .or(c.max_output_tokens)
        .or(c.max_completion_tokens)
        .or(c.generation_config.and_then(|g| g.max_output_tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_tokens: Option<u64>, max_cost: Option<f64>) -> Budget {
        Budget {
            scope: "workspace".into(),
            target: "ws1".into(),
            period: "total".into(),
            max_tokens,
            max_cost_usd: max_cost,
        }
    }

    fn spent(tokens: u64, cost_usd: f64) -> Spent {
        Spent { tokens, cost_usd }
    }

    #[test]
    fn judging_counts_what_is_in_flight() {
        let b = budget(Some(100), None);
        let none = Amount::default();
        assert_eq!(judge(&b, spent(0, 0.0), none), Ok(()));
        assert_eq!(judge(&b, spent(99, 0.0), none), Ok(()));
        assert!(matches!(
            judge(&b, spent(100, 0.0), none),
            Err(Refused::Exceeded(_))
        ));
        let held = Amount {
            tokens: 60,
            cost_usd: 0.0,
        };
        assert_eq!(judge(&b, spent(39, 0.0), held), Ok(()));
        assert!(matches!(
            judge(&b, spent(40, 0.0), held),
            Err(Refused::Busy(_))
        ));
        let c = budget(None, Some(1.0));
        let held = Amount {
            tokens: 0,
            cost_usd: 0.5,
        };
        assert_eq!(judge(&c, spent(0, 0.4), held), Ok(()));
        assert!(matches!(
            judge(&c, spent(0, 0.5), held),
            Err(Refused::Busy(_))
        ));
        assert!(matches!(
            judge(&c, spent(0, 1.0), held),
            Err(Refused::Exceeded(_))
        ));
    }

    #[tokio::test]
    async fn parallel_admissions_overshoot_by_at_most_one_reservation() {
        let r = Arc::new(Reservations::default());
        let b = budget(Some(100), None);
        let amount = Amount {
            tokens: 30,
            cost_usd: 0.0,
        };
        // 20 calls at once, none settled yet (nothing stored): 4 are admitted (0, 30, 60, 90
        // held < 100), their reservations total 120 ≤ 100 + one reservation.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (r, b) = (r.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                r.admit(&[b], amount, |_| async { Ok(Spent::default()) })
                    .await
                    .unwrap()
            }));
        }
        let mut admitted = Vec::new();
        for t in tasks {
            if let Ok(res) = t.await.unwrap() {
                admitted.push(res);
            }
        }
        assert_eq!(admitted.len(), 4);
        assert_eq!(r.held(&b).tokens, 120);
        assert!(r.held(&b).tokens <= 100 + amount.tokens);
        // Settling gives the reservations back.
        admitted.clear();
        assert_eq!(r.held(&b), Amount::default());
        // A store error refuses (fails closed) and reserves nothing.
        let err = r
            .admit(std::slice::from_ref(&b), amount, |_| async {
                Err(anyhow::anyhow!("database is locked"))
            })
            .await;
        assert!(err.is_err());
        assert_eq!(r.held(&b), Amount::default());
        // No budget applies: admitted, nothing held.
        let free = r
            .admit(&[], amount, |_| async { Ok(Spent::default()) })
            .await
            .unwrap();
        assert!(free.is_ok());
    }

    #[test]
    fn estimates_cap_the_output() {
        let body = br#"{"model":"m","max_tokens":128000,"messages":[]}"#;
        let t = estimate(body, 4096);
        assert_eq!(t.input, (body.len() as u64).div_ceil(4));
        assert_eq!(t.output, 4096);
        assert_eq!(estimate(br#"{"max_output_tokens":16}"#, 4096).output, 16);
        assert_eq!(
            estimate(br#"{"generationConfig":{"maxOutputTokens":7}}"#, 4096).output,
            7
        );
        assert_eq!(estimate(b"not json", 100).output, 100);
    }
}
