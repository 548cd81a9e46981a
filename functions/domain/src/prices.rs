//! Prices (SPEC §5.4): a spell is quoted at the sum of its steps' average actual costs, a step
//! never measured counting at its tool's nominal cost; `avgCostPtsCached` is also the binding
//! quote.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{Spell, StepDef};
use crate::ids::Slug;

/// The key under which one step's actual costs are totalled.
pub fn cost_key(spell: &Spell, step: &StepDef) -> String {
    format!("{}/{}/{}", spell.slug, step.id, step.tool)
}

/// Running totals of what a tool actually cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCostTotal {
    /// The tool name.
    pub tool: String,
    /// Calls recorded.
    pub calls: u64,
    /// Points they cost together.
    pub pts: i64,
}

/// A spell's cached price, recomputed every 15 minutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpellStats {
    /// The spell.
    pub slug: Slug,
    /// Its average cost.
    pub avg_cost_pts: i64,
    /// When this was computed.
    pub updated_at: DateTime<Utc>,
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
