//! Pricing: each spell's price recomputed from the measured step costs every 15 minutes (and on
//! the signed webhook), and cached in this process.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use spellcast_domain::catalog::{Catalog, Spell};
use spellcast_domain::ids::Slug;
use spellcast_domain::prices::{average_price, nominal_price, SpellStats, ToolCostTotal};

use crate::ports::{Clock, CostStore, StoreResult};

/// How long a process trusts its cached prices before reading the store again (matters where
/// many instances share one store, as Lambdas do).
const PRICE_CACHE_TTL: Duration = Duration::from_secs(60);

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
    pub async fn price(&self, spell: &Spell, store: &dyn CostStore) -> StoreResult<Price> {
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

/// What recomputing prices needs: the spells, the store, the time and this process's cache.
pub struct Pricing<'a> {
    /// The spells.
    pub catalog: &'a Catalog,
    /// Measured costs and saved prices.
    pub store: &'a dyn CostStore,
    /// The time.
    pub clock: &'a dyn Clock,
    /// This process's cached prices.
    pub book: &'a PriceBook,
}

impl Pricing<'_> {
    /// The price of `spell` now: its cached average, or its nominal cost before any statistics.
    pub async fn price(&self, spell: &Spell) -> StoreResult<Price> {
        self.book.price(spell, self.store).await
    }

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
