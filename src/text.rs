//! Shortening long strings for answers, always saying that something was cut.

use serde_json::Value;

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
