//! Whether a JSON value follows a JSON Schema, and if not, where and how it misses: for a turn's
//! structured output (`output_schema`) and for a tool's arguments (their input schema).
//!
//! It covers the keywords OpenAI's structured outputs use, which are also those of our tools'
//! schemas: `type`, `properties`, `required`, `additionalProperties`, `items`, `enum`, `const`,
//! `anyOf`/`oneOf`/`allOf` and local `$ref`s. Others (formats, lengths, patterns, ranges) are
//! not checked.

use serde_json::{Map, Value};

/// Whether `value` follows `schema`; if not, the first place it misses, as `$.field[0]: how`.
pub(crate) fn check(value: &Value, schema: &Value) -> Result<(), String> {
    Check { root: schema }.value(value, schema, "$", 0)
}

/// How deeply `$ref`s may lead (a recursive schema stops being followed).
const MAX_DEPTH: usize = 64;

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
