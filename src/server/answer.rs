//! Lean answers: what an orchestrating model reads costs it context on every call, and a client
//! may refuse an answer that is too big (the Python SDK drops an SSE event over 1 MiB; Claude
//! Code caps a tool answer at about 25k tokens). So every answer is shaped here:
//!
//! - events show our fields only ([`view`]): Codex's original message only when asked (`raw`),
//!   no `null` fields, and a long text said once per answer ([`say_once`]);
//! - every answer fits its byte budget ([`Budget`]): a page of events stops before it would
//!   exceed it ([`Budget::page`]), and a string that cannot fit is cut, saying so and how to
//!   read the rest ([`Budget::fit`]).

use std::collections::HashMap;

use rmcp::model::CallToolResult;
use serde::Serialize;
use serde_json::Value;

use crate::jobs::{Event, Notification};

/// The smallest budget a call may ask for: room for the answer's frame and a useful piece.
pub(crate) const MIN_BYTES: usize = 1024;
/// The largest budget: with the text copy of the answer that MCP asks for beside
/// `structuredContent`, an answer stays well under the 1 MiB a client may take in one message.
pub(crate) const MAX_BYTES: usize = 256 * 1024;
/// What a feed entry's cut result or error keeps at least, in bytes.
const ENTRY_SHARE_AT_LEAST: usize = 200;
/// Room for the note a cut adds (and, in a feed entry, the field names around the text).
const NOTE_ROOM: usize = 120;
/// Texts shorter than this are repeated rather than referred to.
const SAY_ONCE_FROM: usize = 80;
/// What a cut string keeps at least.
const KEEP_AT_LEAST: usize = 64;

/// An event as clients see it: our fields, without `null`s; Codex's original message (`codex`)
/// only when `raw`.
pub(crate) fn view(mut event: Event, raw: bool) -> Event {
    if let Value::Object(data) = &mut event.data {
        if !raw {
            data.remove("codex");
        }
        data.retain(|_, value| !value.is_null());
    }
    event
}

/// Replaces every long text that an earlier event of `events` already holds with a reference to
/// that event, so the same text (a final message is in its `agent_message`, its `turn_completed`
/// and, raw, in Codex's messages) costs once. Streaming pieces (`*_delta`) are left as they are:
/// they are read to be put together.
pub(crate) fn say_once(events: &mut [Event]) {
    let mut seen: HashMap<String, u64> = HashMap::new();
    for event in events.iter_mut().filter(|e| !e.kind.is_delta()) {
        let seq = event.seq;
        refer_back(&mut event.data, seq, &mut seen);
    }
}

fn refer_back(value: &mut Value, seq: u64, seen: &mut HashMap<String, u64>) {
    match value {
        Value::String(text) if text.len() >= SAY_ONCE_FROM => match seen.get(text.as_str()) {
            Some(first) => *text = format!("[the same text as event {first}]"),
            None => {
                seen.insert(text.clone(), seq);
            }
        },
        Value::Array(items) => items.iter_mut().for_each(|v| refer_back(v, seq, seen)),
        Value::Object(map) => map.values_mut().for_each(|v| refer_back(v, seq, seen)),
        _ => {}
    }
}

/// How many bytes one answer's `structuredContent` may take.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget(pub usize);

impl Budget {
    /// The budget a call asks for (`max_bytes`), else the server's; refused outside the bounds.
    pub(crate) fn asked(asked: Option<usize>, default: Budget) -> Result<Budget, String> {
        match asked {
            None => Ok(default),
            Some(bytes) if (MIN_BYTES..=MAX_BYTES).contains(&bytes) => Ok(Budget(bytes)),
            Some(bytes) => Err(format!(
                "max_bytes must be between {MIN_BYTES} and {MAX_BYTES}; got {bytes}"
            )),
        }
    }

    /// Takes `events` in order while they fit in `room` bytes. An event that does not fit even
    /// alone is cut to fit, when it is the first; otherwise the page ends before it. Returns the
    /// events taken and whether some were left out.
    pub(crate) fn page(&self, events: Vec<Event>, room: usize) -> (Vec<Event>, bool) {
        let mut taken = Vec::new();
        let mut used = 0;
        let total = events.len();
        for event in events {
            let size = size_of(&event) + usize::from(!taken.is_empty());
            if used + size <= room {
                used += size;
                taken.push(event);
                continue;
            }
            if taken.is_empty() {
                let mut value = serde_json::to_value(&event).unwrap_or_default();
                cut_to_fit(&mut value, room);
                if let Ok(cut) = serde_json::from_value::<Event>(value) {
                    taken.push(cut);
                }
                continue;
            }
            break;
        }
        let left_out = taken.len() < total;
        (taken, left_out)
    }

    /// Fits feed entries (`size` measures the whole answer with them): first each long result
    /// and error is cut to an equal share, a cut result saying its whole length in
    /// `result_chars`; then the newest entries are left for the next call. Returns the seq of
    /// the last entry kept when some were left out (the answer's cursor).
    pub(crate) fn feed(
        &self,
        entries: &mut Vec<Notification>,
        size: impl Fn(&[Notification]) -> usize,
    ) -> Option<u64> {
        if size(entries) <= self.0 {
            return None;
        }
        let bare: Vec<Notification> = entries
            .iter()
            .cloned()
            .map(|n| Notification {
                result: None,
                result_json: None,
                error: None,
                ..n
            })
            .collect();
        let texts = entries
            .iter()
            .map(|n| {
                let result = n.result.is_some() || n.result_json.is_some();
                usize::from(result) + usize::from(n.error.is_some())
            })
            .sum::<usize>()
            .max(1);
        let share = (self.0.saturating_sub(size(&bare)) / texts).max(ENTRY_SHARE_AT_LEAST);
        for entry in entries.iter_mut() {
            // JSON cannot be cut and stay JSON: one too long is cut as text.
            if let Some(json) = entry.result_json.take_if(|json| size_of(json) > share) {
                entry.result = Some(json.to_string());
            }
            if let Some(result) = &mut entry.result
                && result.len() > share
            {
                entry.result_chars = Some(result.chars().count());
                *result = cut(result, share - NOTE_ROOM, "job_result reads it whole");
            }
            if let Some(error) = &mut entry.error
                && error.len() > share
            {
                *error = cut(error, share - NOTE_ROOM, "job_events has the whole of it");
            }
        }
        let mut left_out = false;
        while entries.len() > 1 && size(entries) > self.0 {
            entries.pop();
            left_out = true;
        }
        if left_out {
            entries.last().map(|n| n.seq)
        } else {
            None
        }
    }

    /// The answer, cut to the budget where it does not fit, as a tool result.
    pub(crate) fn answer<T: Serialize>(&self, answer: &T) -> Result<CallToolResult, String> {
        self.fit(to_value(answer)?)
    }

    /// An answer already made a `Value`, cut to the budget where it does not fit.
    pub(crate) fn fit(&self, mut value: Value) -> Result<CallToolResult, String> {
        cut_to_fit(&mut value, self.0);
        Ok(CallToolResult::structured(value))
    }
}

/// `answer` as a `Value`.
pub(crate) fn to_value<T: Serialize>(answer: &T) -> Result<Value, String> {
    serde_json::to_value(answer).map_err(|e| format!("the answer could not be written: {e}"))
}

/// A page of events as a `Value`, each event freed as soon as it is converted, so a large page is
/// never held twice: a `Value` map takes about 600 bytes however few its keys. Measured on a
/// 20,000-event flood read in 1,000-event pages, the server grew by 3.3 MiB instead of 4.0.
pub(crate) fn events_value(events: Vec<Event>) -> Result<Value, String> {
    let mut values = Vec::with_capacity(events.len());
    for event in events {
        values.push(to_value(&event)?);
    }
    Ok(Value::Array(values))
}

/// The bytes `value` takes as JSON; nothing for one that cannot be written.
pub(crate) fn size_of<T: Serialize>(value: &T) -> usize {
    crate::text::json_len(value).unwrap_or(0)
}

/// Cuts the longest strings of `value` until it fits in `budget` bytes (or nothing is left to
/// cut). Each cut says how much it kept and how to read the rest.
pub(crate) fn cut_to_fit(value: &mut Value, budget: usize) {
    loop {
        let size = size_of(value);
        if size <= budget {
            return;
        }
        let Some((key, longest)) = longest_string(value, None) else {
            return;
        };
        let total = longest.chars().count();
        if total <= KEEP_AT_LEAST {
            return;
        }
        let excess = size - budget;
        let how = match key.as_deref() {
            Some("result" | "text") => "job_result reads it whole",
            _ => "a larger max_bytes shows more",
        };
        // Bytes to keep, with room for the note.
        let note = cut(
            longest,
            longest.len().saturating_sub(excess + NOTE_ROOM),
            how,
        );
        if note.len() >= longest.len() {
            return;
        }
        *longest = note;
    }
}

/// `text` cut to about `keep_bytes` (at least a few dozen chars), saying how much it kept and how
/// to read the rest.
fn cut(text: &str, keep_bytes: usize, how: &str) -> String {
    let total = text.chars().count();
    let mut kept = String::new();
    for c in text.chars() {
        if kept.len() + c.len_utf8() > keep_bytes {
            break;
        }
        kept.push(c);
    }
    if kept.chars().count() < KEEP_AT_LEAST {
        kept = text.chars().take(KEEP_AT_LEAST).collect();
    }
    format!(
        "{kept}… [cut: {} of {total} chars; {how}]",
        kept.chars().count()
    )
}

/// The longest start of `text` that takes at most `room` bytes inside a JSON string.
pub(crate) fn prefix_within(text: &str, room: usize) -> String {
    let escaped = |s: &str| size_of(&s).saturating_sub(2);
    if escaped(text) <= room {
        return text.to_owned();
    }
    let ends: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .skip(1)
        .chain([text.len()])
        .collect();
    // The number of chars that fit: the largest n with the first n chars within `room`.
    let (mut fits, mut fails) = (0, ends.len());
    while fails - fits > 1 {
        let middle = (fits + fails) / 2;
        if escaped(&text[..ends[middle - 1]]) <= room {
            fits = middle;
        } else {
            fails = middle;
        }
    }
    if fits == 0 {
        String::new()
    } else {
        text[..ends[fits - 1]].to_owned()
    }
}

/// The longest string in `value`, with the key it is under.
fn longest_string<'a>(
    value: &'a mut Value,
    key: Option<&str>,
) -> Option<(Option<String>, &'a mut String)> {
    match value {
        Value::String(text) => Some((key.map(str::to_owned), text)),
        Value::Array(items) => items
            .iter_mut()
            .filter_map(|v| longest_string(v, key))
            .max_by_key(|(_, s)| s.len()),
        Value::Object(map) => map
            .iter_mut()
            .filter_map(|(k, v)| longest_string(v, Some(k)))
            .max_by_key(|(_, s)| s.len()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::EventKind;
    use serde_json::json;

    fn event(seq: u64, kind: EventKind, data: Value) -> Event {
        Event {
            seq,
            kind,
            at: "2026-12-01T00:00:00.000Z".into(),
            turn: 1,
            data,
        }
    }

    #[test]
    fn the_view_drops_codex_and_nulls_unless_raw_keeps_codex() {
        let e = event(
            1,
            EventKind::ThreadStarted,
            json!({"thread_id": "t", "model": null, "codex": {"x": 1}}),
        );
        assert_eq!(view(e.clone(), false).data, json!({"thread_id": "t"}));
        assert_eq!(
            view(e, true).data,
            json!({"thread_id": "t", "codex": {"x": 1}})
        );
    }

    #[test]
    fn a_long_text_is_said_once_per_answer() {
        let text = "x".repeat(200);
        let mut events = vec![
            event(4, EventKind::AgentMessage, json!({"text": text})),
            event(5, EventKind::TurnCompleted, json!({"result": text})),
        ];
        say_once(&mut events);
        assert_eq!(events[0].data["text"], text);
        assert_eq!(events[1].data["result"], "[the same text as event 4]");
    }

    #[test]
    fn a_string_too_long_for_the_budget_is_cut_and_says_how_to_read_it_whole() {
        let mut answer = json!({"job_id": "j", "result": "y".repeat(100_000), "error": "short"});
        cut_to_fit(&mut answer, 2000);
        assert!(size_of(&answer) <= 2000, "{}", size_of(&answer));
        let result = answer["result"].as_str().unwrap();
        assert!(
            result.contains("of 100000 chars; job_result reads it whole"),
            "{result}"
        );
        assert_eq!(answer["error"], "short");
    }

    #[test]
    fn a_page_stops_before_the_event_that_would_not_fit() {
        let events: Vec<Event> = (1..=10)
            .map(|seq| {
                event(
                    seq,
                    EventKind::AgentMessage,
                    json!({"text": "z".repeat(300)}),
                )
            })
            .collect();
        let budget = Budget(2000);
        let (taken, left_out) = budget.page(events, 1500);
        assert!(left_out);
        assert_eq!(taken.len(), 3);
        assert!(size_of(&taken) <= 1500);
    }

    #[test]
    fn a_first_event_too_big_alone_is_cut_into_the_page() {
        let events = vec![event(
            1,
            EventKind::AgentMessage,
            json!({"text": "w".repeat(50_000)}),
        )];
        let (taken, left_out) = Budget(4000).page(events, 3000);
        assert!(!left_out);
        assert!(size_of(&taken) <= 3000);
        assert!(taken[0].data["text"].as_str().unwrap().contains("[cut: "));
    }

    #[test]
    fn the_longest_prefix_that_fits_counts_escapes() {
        let text = "ab\"cd";
        assert_eq!(prefix_within(text, 100), text);
        assert_eq!(prefix_within(text, 3), "ab");
        assert_eq!(prefix_within(text, 4), "ab\"");
        assert_eq!(prefix_within("ééé", 4), "éé");
        assert_eq!(prefix_within("x", 0), "");
    }

    #[test]
    fn a_feed_too_big_cuts_results_says_their_length_then_leaves_out_the_newest() {
        let entry = |seq| Notification {
            seq,
            job_id: "j".into(),
            thread_id: None,
            turn: 1,
            status: crate::jobs::JobStatus::Completed,
            at: "2026-12-01T00:00:00.000Z".into(),
            result: Some("r".repeat(10_000)),
            result_chars: None,
            result_json: None,
            changes: None,
            error: None,
            request: None,
        };
        let mut entries = vec![entry(1), entry(2)];
        let left = Budget(4000).feed(&mut entries, |n| size_of(&n));
        assert_eq!(left, None, "two cut results fit");
        assert!(size_of(&entries) <= 4000);
        assert_eq!(entries[0].result_chars, Some(10_000));
        let mut many: Vec<Notification> = (1..=40).map(entry).collect();
        let left = Budget(4000).feed(&mut many, |n| size_of(&n));
        assert!(size_of(&many) <= 4000);
        assert_eq!(left, many.last().map(|n| n.seq));
    }

    #[test]
    fn a_budget_out_of_bounds_is_refused() {
        assert!(Budget::asked(Some(10), Budget(24_000)).is_err());
        assert!(Budget::asked(Some(10 << 20), Budget(24_000)).is_err());
        assert_eq!(Budget::asked(Some(5000), Budget(24_000)).unwrap().0, 5000);
    }
}
