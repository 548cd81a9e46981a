//! The store's part that keeps what tools actually cost, and the spell prices computed from it.

use async_trait::async_trait;

use spellcast_domain::prices::{SpellStats, ToolCostTotal};

use super::StoreResult;

/// What tools actually cost, and the spell prices computed from it.
#[async_trait]
pub trait CostStore: Send + Sync {
    /// Adds one call's actual cost to a tool's totals.
    async fn record_tool_cost(&self, tool: &str, pts: i64) -> StoreResult<()>;
    /// Every tool's totals.
    async fn tool_costs(&self) -> StoreResult<Vec<ToolCostTotal>>;
    /// Saves recomputed spell prices.
    async fn save_spell_stats(&self, stats: &[SpellStats]) -> StoreResult<()>;
    /// Every spell's saved price.
    async fn spell_stats(&self) -> StoreResult<Vec<SpellStats>>;
}
