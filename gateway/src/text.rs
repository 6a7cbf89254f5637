//! Hygiene of user text: what names and messages may contain, and the NUL
//! escape that no JSON string may carry (PostgreSQL cannot store it).

use crate::error::{ApiError, ApiResult};

/// 422 naming `field` when `value` holds a control character: the C0 range
/// but TAB, DEL, and the C1 range. Such text ends up in email headers, on
/// partners' screens and in terminals reading logs, where CR/LF forge headers
/// and ESC drives the terminal.
pub fn check_plain(field: &str, value: &str) -> ApiResult<()> {
    if value.chars().any(|c| c != '\t' && c.is_control()) {
        return Err(ApiError::validation(format!(
            "{field} must not contain control characters (line breaks, escape, NUL)"
        )));
    }
    Ok(())
}

/// Whether a JSON text holds the escape `\u0000` inside a string. A raw NUL
/// byte is already invalid JSON; the escape is valid JSON and decodes to a
/// NUL that PostgreSQL refuses with an error the client would see as 500.
/// Counts the backslashes before each `u0000` so that `\\u0000` (a literal
/// backslash followed by text) is not taken for the escape.
pub fn has_nul_escape(json: &[u8]) -> bool {
    let mut from = 0;
    while let Some(pos) = find(&json[from..], b"u0000") {
        let at = from + pos;
        let backslashes = json[..at].iter().rev().take_while(|b| **b == b'\\').count();
        if backslashes % 2 == 1 {
            return true;
        }
        from = at + 1;
    }
    false
}

/// Where in `json` the first NUL sits, as a dotted path (`members.0.name`);
/// only called once [`has_nul_escape`] found one, to name the field.
pub fn nul_field(json: &str) -> String {
    fn walk(v: &serde_json::Value, path: &mut Vec<String>) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                path.push(i.to_string());
                let found = walk(item, path);
                if !found {
                    path.pop();
                }
                found
            }),
            serde_json::Value::Object(map) => map.iter().any(|(k, item)| {
                path.push(k.replace('\0', "\\u0000"));
                let found = k.contains('\0') || walk(item, path);
                if !found {
                    path.pop();
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = Vec::new();
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(v) if walk(&v, &mut path) && !path.is_empty() => path.join("."),
        _ => "a string".to_string(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused_but_tab_and_unicode_are_not() {
        for bad in ["a\rb", "a\nb", "a\u{1b}[31m", "a\0", "a\u{7f}", "a\u{85}"] {
            assert!(check_plain("name", bad).is_err(), "{bad:?}");
        }
        for good in ["Ada\tLovelace", "Zoë <b>", "李雷", "🙂"] {
            assert!(check_plain("name", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn nul_escape_is_found_only_as_an_escape() {
        assert!(has_nul_escape(br#"{"name":"a\u0000"}"#));
        assert!(has_nul_escape(br#"{"a\u0000":1}"#));
        assert!(has_nul_escape(br#"{"n":"\\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"name":"a\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"name":"u0000"}"#));
        assert!(!has_nul_escape(br#"{"name":"\u0001"}"#));
    }

    #[test]
    fn the_field_holding_a_nul_is_named() {
        assert_eq!(nul_field(r#"{"a":"x","name":"a\u0000"}"#), "name");
        assert_eq!(nul_field(r#"{"m":[{"n":"ok"},{"n":"\u0000"}]}"#), "m.1.n");
        assert_eq!(nul_field(r#"{"k\u0000":1}"#), "k\\u0000");
    }
}
