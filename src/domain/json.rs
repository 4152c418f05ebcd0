//! JSON helpers for the shared context.

use serde_json::{Map, Value};

pub type JsonObject = Map<String, Value>;

/// Applies an RFC 7386 JSON merge patch to `target`: objects merge
/// recursively, `null` removes a key, anything else replaces.
pub fn merge_patch(target: &mut JsonObject, patch: &JsonObject) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(patch_object) => {
                let entry = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(JsonObject::new()));
                if !entry.is_object() {
                    *entry = Value::Object(JsonObject::new());
                }
                if let Value::Object(existing) = entry {
                    merge_patch(existing, patch_object);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// An upper bound of the value's encoded size in either wire format we
/// speak: compact JSON, or protobuf `google.protobuf.Value` (whose per-value
/// framing makes arrays of small numbers several times larger than JSON).
pub fn wire_size(value: &Value) -> usize {
    const FRAME: usize = 6;
    FRAME
        + match value {
            Value::Null | Value::Bool(_) => 2,
            Value::Number(_) => 9,
            Value::String(s) => s.len() + FRAME,
            Value::Array(items) => items.iter().map(wire_size).sum(),
            Value::Object(object) => object_wire_size(object),
        }
}

pub fn object_wire_size(object: &JsonObject) -> usize {
    object.iter().map(|(key, value)| key.len() + 6 + wire_size(value)).sum()
}

/// Size of the value serialized as compact JSON, in bytes.
pub fn encoded_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    /// Counts bytes instead of keeping them.
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
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> JsonObject {
        match value {
            Value::Object(object) => object,
            _ => unreachable!(),
        }
    }

    #[test]
    fn wire_size_bounds_json_and_protobuf() {
        let small_numbers = Value::Array(vec![json!(1); 1000]);
        let json_len = serde_json::to_vec(&small_numbers).unwrap().len();
        // Each protobuf Value holding a double takes 11 bytes plus list framing.
        assert!(wire_size(&small_numbers) >= 13 * 1000);
        assert!(wire_size(&small_numbers) >= json_len);
        let text = json!({"k": "x".repeat(100)});
        assert!(wire_size(&text) > serde_json::to_vec(&text).unwrap().len());
    }

    #[test]
    fn rfc7386_examples() {
        let mut target = object(json!({"a": "b", "c": {"d": "e", "f": "g"}, "s": 1}));
        merge_patch(
            &mut target,
            &object(json!({"a": "z", "c": {"f": null}, "s": {"t": true}, "n": [1]})),
        );
        assert_eq!(
            Value::Object(target),
            json!({"a": "z", "c": {"d": "e"}, "s": {"t": true}, "n": [1]})
        );
    }
}
