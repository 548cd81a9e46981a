//! Fixtures for unit tests, here and in the crates above (feature `testing`).

use chrono::Utc;
use serde_json::{json, Value};

use crate::catalog::{Catalog, Spell, SpellDef};
use crate::ids::Slug;
use crate::run::{Run, RunStatus, StepState};

/// A catalog of one spell `t` with these steps.
pub fn catalog_of(steps: Value) -> Catalog {
    let mut d = def(json!({"type": "object"}));
    d.steps = serde_json::from_value(steps).unwrap();
    let mut catalog = Catalog::default();
    catalog.insert(Spell::check(d).unwrap());
    catalog
}

/// A spell `t` with these inputs and one `text.render` step.
pub fn def(inputs: Value) -> SpellDef {
    serde_json::from_value(json!({
        "slug": "t", "version": 1, "title": "T", "summary": "s", "description": "d",
        "inputs": inputs,
        "steps": [{"id": "a", "title": "A", "tool": "text.render", "with": {"template": "hi"}}],
        "og": {"image": "/x.png", "imageWidth": 1200, "imageHeight": 630, "imageAlt": "x"}
    }))
    .unwrap()
}

/// A queued run of spell `s` with two pending steps, `a` and `b`, that cost 7 points.
pub fn queued_run() -> Run {
    Run {
        run_id: "run_1".into(),
        credit_tx_id: "tx_1".into(),
        invoice_id: "inv_1".into(),
        user_id: "u".into(),
        slug: Slug::parse("s").unwrap(),
        spell_version: 1,
        status: RunStatus::Queued,
        steps: vec![StepState::pending("a", "A"), StepState::pending("b", "B")],
        outputs: vec![],
        cost_pts: 7,
        refunded_pts: 0,
        context: json!({}),
        created_at: Utc::now(),
        started_at: None,
        finished_at: None,
        deadline_at: None,
        lease_fence: 0,
        lease_until: None,
        error: None,
        last_seq: 0,
        webhook: None,
        uploads: Vec::new(),
        call_back: None,
    }
}
