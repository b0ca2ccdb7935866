//! Shortening long strings for answers, always saying that something was cut, and measuring
//! what a value takes as JSON.

use serde::Serialize;
use serde_json::Value;

/// The length of `value` as JSON, counted as it is written rather than written out; `None` when
/// it cannot be written.
pub fn json_len(value: &impl Serialize) -> Option<usize> {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.0)
}

/// `text` cut to at most `max` characters, with a note of how many were left out.
pub fn shorten(text: &str, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max).collect();
    format!("{kept}… [truncated {} of {total} chars]", total - max)
}

/// Shortens every string inside `value` to at most `max` characters.
pub fn shorten_strings(value: &mut Value, max: usize) {
    match value {
        Value::String(s) => {
            if s.chars().count() > max {
                *s = shorten(s, max);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| shorten_strings(v, max)),
        Value::Object(map) => map.values_mut().for_each(|v| shorten_strings(v, max)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_json_length_is_that_of_the_json_written() {
        let value = json!({"text": "a \"quoted\" line\n", "n": [1, 2.5, null], "é": "ü"});
        let written = serde_json::to_vec(&value).expect("written");
        assert_eq!(json_len(&value), Some(written.len()));
    }

    #[test]
    fn short_text_is_left_alone() {
        assert_eq!(shorten("abc", 3), "abc");
    }

    #[test]
    fn long_text_says_it_was_cut() {
        assert_eq!(shorten("abcdef", 2), "ab… [truncated 4 of 6 chars]");
    }

    #[test]
    fn nested_strings_are_shortened() {
        let mut value = json!({"a": ["xxxxxx", 1], "b": {"c": "yyyyyy"}});
        shorten_strings(&mut value, 3);
        assert_eq!(value["a"][0], "xxx… [truncated 3 of 6 chars]");
        assert_eq!(value["a"][1], 1);
        assert_eq!(value["b"]["c"], "yyy… [truncated 3 of 6 chars]");
    }
}
