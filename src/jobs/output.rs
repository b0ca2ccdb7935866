//! Structured output: a turn's final message parsed as JSON and checked against the
//! `output_schema` it was asked to follow.
//!
//! Codex passes the schema to the model, which is held to it (OpenAI's structured outputs), so a
//! mismatch is rare: a model or provider that ignores the schema, or a message cut short.

use serde_json::Value;

use crate::schema_check;

/// The turn's final message `result` as JSON, if it is JSON that follows `schema`; else what is
/// wrong with it.
pub(super) fn parse(result: Option<&str>, schema: &Value) -> Result<Value, String> {
    let Some(text) = result else {
        return Err("Codex gave no final message".to_owned());
    };
    let value: Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("the message is not JSON ({e})"))?;
    schema_check::check(&value, schema)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "answer": {"type": "string"},
                "score": {"type": "integer"},
                "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
                "verdict": {"anyOf": [{"type": "null"}, {"enum": ["pass", "fail"]}]}
            },
            "required": ["answer", "score"],
            "additionalProperties": false,
            "$defs": {"tag": {"type": "string", "enum": ["a", "b"]}}
        })
    }

    #[test]
    fn json_that_follows_the_schema_is_returned_parsed() {
        let text = r#" {"answer": "yes", "score": 3, "tags": ["a"], "verdict": null} "#;
        let parsed = parse(Some(text), &answer_schema()).unwrap();
        assert_eq!(parsed["score"], 3);
    }

    #[test]
    fn each_kind_of_mismatch_names_where_and_what() {
        let schema = answer_schema();
        let miss = |text: &str| parse(Some(text), &schema).unwrap_err();
        assert!(
            miss("yes").starts_with("the message is not JSON"),
            "{}",
            miss("yes")
        );
        assert_eq!(miss(r#"{"answer": "y"}"#), "$: missing score");
        assert_eq!(
            miss(r#"{"answer": 1, "score": 1}"#),
            "$.answer: expected string, got a number 1"
        );
        assert_eq!(
            miss(r#"{"answer": "y", "score": 1.5}"#),
            "$.score: expected integer, got a number 1.5"
        );
        assert_eq!(
            miss(r#"{"answer": "y", "score": 1, "extra": true}"#),
            "$.extra: not a property the schema allows"
        );
        assert_eq!(
            miss(r#"{"answer": "y", "score": 1, "tags": ["c"]}"#),
            r#"$.tags[0]: a string "c" is not one of ["a","b"]"#
        );
        assert!(
            miss(r#"{"answer": "y", "score": 1, "verdict": "maybe"}"#)
                .starts_with("$.verdict: matches none of anyOf"),
        );
        assert_eq!(
            parse(None, &schema).unwrap_err(),
            "Codex gave no final message"
        );
    }
}
