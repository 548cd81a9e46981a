//! `time.delay`: waits, reporting progress ticks. Stands in for slow work.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use spellcast_application::tools::{Progress, Tool, ToolCall, ToolError, ToolResult};
use spellcast_domain::tool_kinds::{delay_seconds, str_param, ToolKind};

/// Waits `seconds` (0..=86400; a long one is a durable wait, which the runner keeps instead: SPEC
/// §8.2) in `ticks` (1..=100) equal parts. Costs 1 point per started second.
pub struct Delay;

#[async_trait]
impl Tool for Delay {
    async fn call(
        &self,
        call: ToolCall<'_>,
        progress: &dyn Progress,
    ) -> Result<ToolResult, ToolError> {
        let total = delay_seconds(call.params);
        let ticks = call
            .params
            .get("ticks")
            .and_then(Value::as_u64)
            .unwrap_or(4)
            .max(1);
        let label = str_param(call.params, "message").unwrap_or("Working");
        let pause = Duration::from_secs_f64(total / ticks as f64);
        for tick in 1..=ticks {
            tokio::time::sleep(pause).await;
            let fraction = tick as f64 / ticks as f64;
            progress
                .report(fraction, Some(format!("{label} ({tick}/{ticks})")))
                .await;
        }
        Ok(ToolResult::done(
            vec![],
            ToolKind::TimeDelay.nominal_cost(call.params),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Recorded;
    use serde_json::json;

    #[tokio::test(start_paused = true)]
    async fn ticks_report_rising_progress_to_one() {
        let params = json!({"seconds": 2, "ticks": 4});
        let ctx = json!({});
        let seen = Recorded::default();
        let call = ToolCall {
            params: &params,
            context: &ctx,
            run_id: &"r".into(),
            uploads: &[],
            blobs: &crate::testing::Files::default(),
            call_back: None,
        };
        let out = Delay.call(call, &seen).await.unwrap();
        assert_eq!(*seen.0.lock().unwrap(), vec![0.25, 0.5, 0.75, 1.0]);
        assert_eq!(out.cost_pts, 2);
    }

    #[test]
    fn out_of_range_parameters_are_refused() {
        let kind = ToolKind::TimeDelay;
        assert!(kind.check(&json!({"seconds": 86_401})).is_err());
        assert!(kind.check(&json!({"ticks": 0})).is_err());
        assert!(kind.check(&json!({"seconds": 1.5, "ticks": 3})).is_ok());
    }
}
