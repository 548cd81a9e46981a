//! SSE framing: whatever text a step reports (newlines, `data:`/`event:` lines, carriage
//! returns), its event is one frame that a standard parser reads back as that very event — a
//! progress message, or a model's streamed answer (`stepDelta`), can never inject a frame of
//! its own.
#![no_main]

use futures::StreamExt;
use libfuzzer_sys::fuzz_target;
use spellcast_domain::run::{EventBody, RunEvent, StepStatus};
use sse_stream::SseStream;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let update = EventBody::StepUpdate {
        run_id: "run_fuzz".into(),
        step_id: text.to_owned(),
        index: 0,
        of: 1,
        status: StepStatus::Running,
        progress: 0.5,
        message: Some(text.to_owned()),
        outputs: None,
        at: None,
        attempt: None,
        resumed: false,
        until: None,
    };
    let delta = EventBody::StepDelta {
        run_id: "run_fuzz".into(),
        step_id: "answer".into(),
        index: 0,
        text: text.to_owned(),
        progress: 0.5,
    };
    for body in [update, delta] {
        let event = RunEvent {
            seq: text.len() as u64 + 1,
            body,
        };
        let frame = spellcast_http::sse_frame(&event);
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(frame)]);
        let parsed: Vec<_> =
            futures::executor::block_on(SseStream::from_bytes_stream(chunks).collect());
        assert_eq!(parsed.len(), 1, "one event, one frame: {text:?}");
        let sse = parsed[0].as_ref().expect("the frame parses");
        assert_eq!(sse.id.as_deref(), Some(event.seq.to_string().as_str()));
        assert_eq!(sse.event.as_deref(), Some(event.body.kind()));
        assert_eq!(sse.data.as_deref(), Some(event.body.data_json().as_str()));
    }
});
