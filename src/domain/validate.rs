//! Bounds and shape checks shared by the domain types. Errors name the field.

use super::error::{Error, Result};

pub fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} bytes, got {}", value.len()),
        ));
    }
    Ok(())
}

/// Non-empty, bounded, no control characters.
pub fn check_name(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    check_text(field, value, max)?;
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, format!("{value:?} contains control characters")));
    }
    Ok(())
}

pub fn check_count(field: &str, count: usize, max: usize) -> Result<()> {
    if count > max {
        return Err(Error::invalid(
            field,
            format!("at most {max} entries allowed, got {count}"),
        ));
    }
    Ok(())
}

pub fn check_list(field: &str, values: &[String], max_count: usize, max_len: usize) -> Result<()> {
    check_count(field, values.len(), max_count)?;
    for (i, value) in values.iter().enumerate() {
        check_name(&format!("{field}[{i}]"), value, max_len)?;
    }
    Ok(())
}
