//! Structured output: a turn's final message parsed as JSON and checked against the
//! `output_schema` it was asked to follow.
//!
//! Codex passes the schema to the model, which is held to it (OpenAI's structured outputs), so a
//! mismatch is rare: a model or provider that ignores the schema, or a message cut short. The
//! check covers the keywords structured outputs take (`type`, `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `const`, `anyOf`/`oneOf`/`allOf`, local `$ref`s);
//! others (formats, lengths, patterns) are not checked.

use serde_json::{Map, Value};

/// How deeply `$ref`s may lead (a recursive schema stops being followed).
const MAX_DEPTH: usize = 64;

/// The turn's final message `result` as JSON, if it is JSON that follows `schema`; else what is
/// wrong with it.
pub(super) fn parse(result: Option<&str>, schema: &Value) -> Result<Value, String> {
    let Some(text) = result else {
        return Err("Codex gave no final message".to_owned());
    };
    let value: Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("the message is not JSON ({e})"))?;
    Check { root: schema }.value(&value, schema, "$", 0)?;
    Ok(value)
}

struct Check<'a> {
    root: &'a Value,
}

impl Check<'_> {
    /// Whether `value` (at `path`) follows `schema`; if not, where and how it does not.
    fn value(&self, value: &Value, schema: &Value, path: &str, depth: usize) -> Result<(), String> {
        let Value::Object(schema) = schema else {
            // `true` (or anything not a schema object) takes every value; `false` takes none.
            return match schema {
                Value::Bool(false) => Err(format!("{path}: no value is allowed here")),
                _ => Ok(()),
            };
        };
        if depth > MAX_DEPTH {
            return Ok(());
        }
        if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
            let pointer = target.strip_prefix('#').unwrap_or(target);
            if let Some(target) = self.root.pointer(pointer) {
                self.value(value, target, path, depth + 1)?;
            }
        }
        if let Some(expected) = schema.get("type") {
            let types: Vec<&str> = match expected {
                Value::String(one) => vec![one.as_str()],
                Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !types.is_empty() && !types.iter().any(|t| is_type(value, t)) {
                return Err(format!(
                    "{path}: expected {}, got {}",
                    types.join(" or "),
                    shown(value)
                ));
            }
        }
        if let Some(Value::Array(allowed)) = schema.get("enum")
            && !allowed.contains(value)
        {
            return Err(format!(
                "{path}: {} is not one of {}",
                shown(value),
                Value::Array(allowed.clone())
            ));
        }
        if let Some(constant) = schema.get("const")
            && constant != value
        {
            return Err(format!("{path}: expected {constant}, got {}", shown(value)));
        }
        if let Some(Value::Array(parts)) = schema.get("allOf") {
            for part in parts {
                self.value(value, part, path, depth + 1)?;
            }
        }
        for any in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = schema.get(any) {
                let mut misses = branches
                    .iter()
                    .map(|branch| self.value(value, branch, path, depth + 1));
                if let Some(Err(first)) = misses.next()
                    && misses.all(|miss| miss.is_err())
                {
                    return Err(format!("{path}: matches none of {any} (first: {first})"));
                }
            }
        }
        match value {
            Value::Object(fields) => self.object(fields, schema, path, depth),
            Value::Array(items) => match schema.get("items") {
                Some(item_schema) => items.iter().enumerate().try_for_each(|(i, item)| {
                    self.value(item, item_schema, &format!("{path}[{i}]"), depth + 1)
                }),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn object(
        &self,
        fields: &Map<String, Value>,
        schema: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        if let Some(Value::Array(required)) = schema.get("required") {
            let missing: Vec<&str> = required
                .iter()
                .filter_map(Value::as_str)
                .filter(|name| !fields.contains_key(*name))
                .collect();
            if !missing.is_empty() {
                return Err(format!("{path}: missing {}", missing.join(", ")));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in fields {
            let at = format!("{path}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => self.value(field, field_schema, &at, depth + 1)?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{at}: not a property the schema allows"));
                    }
                    Some(extra) => self.value(field, extra, &at, depth + 1)?,
                    None => {}
                },
            }
        }
        Ok(())
    }
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => true,
    }
}

/// A value as a mismatch names it: its type, and short values themselves.
fn shown(value: &Value) -> String {
    let kind = match value {
        Value::Object(_) => return "an object".to_owned(),
        Value::Array(_) => return "an array".to_owned(),
        Value::String(_) => "a string",
        Value::Bool(_) => "a boolean",
        Value::Null => return "null".to_owned(),
        Value::Number(_) => "a number",
    };
    let text = value.to_string();
    if text.len() <= 40 {
        format!("{kind} {text}")
    } else {
        kind.to_owned()
    }
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
