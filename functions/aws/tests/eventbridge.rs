//! The EventBridge bus against moto: events reach a rule's SQS target; a partial failure (entries
//! reported failed and not delivered) is retried, and nothing is lost or duplicated.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_eventbridge::types::{PutEventsRequestEntry, Target};
use spellcast_application::ports::BusError;
use spellcast_aws::{Entry, EventBridgeBus, PutEvents, SOURCE};
use spellcast_domain::ids::new_id;

mod engines;

async fn moto() -> Option<SdkConfig> {
    engines::engine("SPELLCAST_MOTO_ENDPOINT").await
}

/// A bus, a rule matching Spellcast's events, and an SQS queue as its target.
async fn bus_with_queue(config: &SdkConfig) -> (String, aws_sdk_sqs::Client, String) {
    let events = aws_sdk_eventbridge::Client::new(config);
    let sqs = aws_sdk_sqs::Client::new(config);
    let name = new_id("bus").replace('_', "-");
    events.create_event_bus().name(&name).send().await.unwrap();
    let queue_url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    events
        .put_rule()
        .name("spellcast-all")
        .event_bus_name(&name)
        .event_pattern(format!(r#"{{"source": ["{SOURCE}"]}}"#))
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule("spellcast-all")
        .event_bus_name(&name)
        .targets(Target::builder().id("queue").arn(arn).build().unwrap())
        .send()
        .await
        .unwrap();
    (name, sqs, queue_url)
}

/// Every message on the queue: detail-type and detail.
async fn drain(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    expect: usize,
) -> Vec<(String, serde_json::Value)> {
    let mut got = Vec::new();
    for _ in 0..50 {
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() && got.len() >= expect {
            break;
        }
        for m in messages {
            let event: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            got.push((
                event["detail-type"].as_str().unwrap().to_owned(),
                event["detail"].clone(),
            ));
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    got
}

fn entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            detail_type: if i % 2 == 0 {
                "stepUpdate"
            } else {
                "executionStarted"
            }
            .into(),
            detail: format!(r#"{{"n": {i}}}"#),
        })
        .collect()
}

fn numbers(got: &[(String, serde_json::Value)]) -> BTreeMap<i64, usize> {
    let mut seen = BTreeMap::new();
    for (_, detail) in got {
        *seen.entry(detail["n"].as_i64().unwrap()).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn events_reach_the_rule_target_in_batches_of_ten() {
    let Some(config) = moto().await else { return };
    let (name, sqs, queue) = bus_with_queue(&config).await;
    let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&config), &name);
    bus.put_all(entries(25)).await.unwrap();
    let got = drain(&sqs, &queue, 25).await;
    assert_eq!(numbers(&got), (0..25).map(|n| (n, 1)).collect());
    assert!(got
        .iter()
        .any(|(t, d)| t == "executionStarted" && d["n"] == 1));
}

/// Fails every third entry of its first call the way EventBridge does: not delivered, reported
/// with an error code. Later calls pass through.
struct FlakyOnce {
    inner: aws_sdk_eventbridge::Client,
    calls: AtomicUsize,
}

#[async_trait]
impl PutEvents for FlakyOnce {
    async fn send_batch(
        &self,
        entries: Vec<PutEventsRequestEntry>,
    ) -> Result<Vec<Option<String>>, BusError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) > 0 {
            return self.inner.send_batch(entries).await;
        }
        let (pass, _dropped): (Vec<_>, Vec<_>) = entries
            .iter()
            .cloned()
            .enumerate()
            .partition(|(i, _)| i % 3 != 0);
        let results = self
            .inner
            .send_batch(pass.into_iter().map(|(_, e)| e).collect())
            .await?;
        let mut passed = results.into_iter();
        Ok((0..entries.len())
            .map(|i| {
                if i % 3 == 0 {
                    Some("InternalFailure".into())
                } else {
                    passed.next().flatten()
                }
            })
            .collect())
    }
}

#[tokio::test]
async fn a_partial_failure_is_retried_without_loss_or_duplicates() {
    let Some(config) = moto().await else { return };
    let (name, sqs, queue) = bus_with_queue(&config).await;
    let flaky = Arc::new(FlakyOnce {
        inner: aws_sdk_eventbridge::Client::new(&config),
        calls: AtomicUsize::new(0),
    });
    let bus = EventBridgeBus::with_api(flaky.clone(), &name);
    bus.put_all(entries(10)).await.unwrap();
    assert!(
        flaky.calls.load(Ordering::SeqCst) >= 2,
        "the failed entries were sent again"
    );
    let got = drain(&sqs, &queue, 10).await;
    assert_eq!(
        numbers(&got),
        (0..10).map(|n| (n, 1)).collect(),
        "each event exactly once"
    );
}
