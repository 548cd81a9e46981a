//! Prices: the average actual cost of each step, recomputed every 15 minutes (and on the signed
//! webhook), summed per spell into `avgCostPtsCached`, which is also the binding quote.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::catalog::Catalog;
use crate::catalog::{Spell, StepDef};
use crate::ids::Slug;
use crate::ports::{Clock, SpellStats, Store, StoreResult, ToolCostTotal};

/// How long a process trusts its cached prices before reading the store again (matters where
/// many instances share one store, as Lambdas do).
const PRICE_CACHE_TTL: Duration = Duration::from_secs(60);

/// The key under which one step's actual costs are totalled.
pub fn cost_key(spell: &Spell, step: &StepDef) -> String {
    format!("{}/{}/{}", spell.slug, step.id, step.tool)
}

/// A spell's price now, and when it was computed (`None` before the first recomputation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// Points.
    pub pts: i64,
    /// When the statistics behind it were computed.
    pub updated_at: Option<DateTime<Utc>>,
}

/// Cached spell prices.
#[derive(Default)]
pub struct PriceBook {
    cached: RwLock<Option<(Instant, HashMap<Slug, SpellStats>)>>,
}

impl PriceBook {
    /// The price of `spell`: its cached average, or its nominal cost before any statistics.
    pub async fn price(&self, spell: &Spell, store: &dyn Store) -> StoreResult<Price> {
        let fresh = self
            .cached
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(at, _)| at.elapsed() < PRICE_CACHE_TTL))
            .unwrap_or(false);
        if !fresh {
            let loaded = store.spell_stats().await?;
            self.replace(loaded);
        }
        let cached = self.cached.read().ok().and_then(|c| {
            c.as_ref()
                .and_then(|(_, map)| map.get(&spell.slug).cloned())
        });
        Ok(match cached {
            Some(stats) => Price {
                pts: stats.avg_cost_pts,
                updated_at: Some(stats.updated_at),
            },
            None => Price {
                pts: nominal_price(spell),
                updated_at: None,
            },
        })
    }

    /// Replaces the cache (after a recomputation or a store read).
    pub fn replace(&self, stats: Vec<SpellStats>) {
        let map = stats.into_iter().map(|s| (s.slug.clone(), s)).collect();
        if let Ok(mut cached) = self.cached.write() {
            *cached = Some((Instant::now(), map));
        }
    }
}

/// The price before any run was measured: the sum of the tools' nominal costs, at least 1.
pub fn nominal_price(spell: &Spell) -> i64 {
    spell
        .def
        .steps
        .iter()
        .map(Spell::nominal_cost)
        .sum::<i64>()
        .max(1)
}

/// A spell's average cost from measured step costs (a step never measured counts nominally).
pub fn average_price(spell: &Spell, totals: &HashMap<String, ToolCostTotal>) -> i64 {
    spell
        .def
        .steps
        .iter()
        .map(|step| match totals.get(&cost_key(spell, step)) {
            Some(t) if t.calls > 0 => (t.pts + t.calls as i64 - 1) / t.calls as i64,
            _ => Spell::nominal_cost(step),
        })
        .sum::<i64>()
        .max(1)
}

/// What recomputing prices needs: the spells, the store, the time and this process's cache.
pub struct Pricing<'a> {
    /// The spells.
    pub catalog: &'a Catalog,
    /// Measured costs and saved prices.
    pub store: &'a dyn Store,
    /// The time.
    pub clock: &'a dyn Clock,
    /// This process's cached prices.
    pub book: &'a PriceBook,
}

impl Pricing<'_> {
    /// Recomputes every spell's average cost from the measured step costs, saves it, and refreshes
    /// this process's cache (so cached metadata changes at once).
    pub async fn recompute(&self) -> StoreResult<Vec<SpellStats>> {
        let totals: HashMap<String, ToolCostTotal> = self
            .store
            .tool_costs()
            .await?
            .into_iter()
            .map(|t| (t.tool.clone(), t))
            .collect();
        let now = self.clock.now();
        let stats: Vec<SpellStats> = self
            .catalog
            .iter()
            .map(|spell| SpellStats {
                slug: spell.slug.clone(),
                avg_cost_pts: average_price(spell, &totals),
                updated_at: now,
            })
            .collect();
        self.store.save_spell_stats(&stats).await?;
        self.book.replace(stats.clone());
        tracing::info!(spells = stats.len(), "spell prices recomputed");
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SpellDef;
    use serde_json::json;

    #[test]
    fn measured_costs_replace_nominal_ones_rounding_up() {
        let def: SpellDef = serde_json::from_value(json!({
            "slug": "t", "version": 1, "title": "T", "summary": "s", "description": "d",
            "inputs": {"type": "object"},
            "steps": [
                {"id": "a", "title": "A", "tool": "time.delay", "with": {"seconds": 3}},
                {"id": "b", "title": "B", "tool": "image.sigil", "with": {"seed": "x"}}
            ],
            "og": {"image": "/x.png", "imageWidth": 1200, "imageHeight": 630, "imageAlt": "x"}
        }))
        .unwrap();
        let spell = Spell::check(def).unwrap();
        assert_eq!(nominal_price(&spell), 3 + 5);
        let key = cost_key(&spell, &spell.def.steps[0]);
        let totals = HashMap::from([(
            key.clone(),
            ToolCostTotal {
                tool: key,
                calls: 2,
                pts: 9,
            },
        )]);
        assert_eq!(average_price(&spell, &totals), 5 + 5);
    }
}
