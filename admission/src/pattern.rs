//! OpenAPI `pattern`s, read as the apiserver reads them.
//!
//! The apiserver matches patterns with Go's `regexp` (RE2 syntax). Rust's `regex` crate takes the
//! same syntax, with one difference that changes verdicts: in Go the Perl classes `\d`, `\s`, `\w`
//! and the word boundary `\b` are ASCII-only, while in Rust they are Unicode-aware. A URL holding
//! a no-break space passes `^https?://[^\s]*$` in the apiserver, so it must pass here too. The
//! classes are rewritten to their ASCII sets before compiling.

use regex::Regex;

/// A `pattern` keyword, compiled once.
#[derive(Debug)]
pub(crate) struct Pattern {
    /// The pattern as the CRD writes it, for messages.
    pub source: String,
    /// The compiled pattern, or why it does not compile.
    pub regex: Result<Regex, String>,
}

impl Pattern {
    pub(crate) fn compile(source: &str) -> Self {
        Self {
            source: source.to_string(),
            regex: Regex::new(&as_rust_syntax(source)).map_err(|e| e.to_string()),
        }
    }
}

/// Rewrites the Go-only meaning of Perl classes into syntax with the same meaning in Rust.
///
/// Each class becomes a bracketed ASCII set. That is valid on its own and nested inside another
/// class (Rust unions nested classes), so the rewrite need not know where it is, except for `\b`,
/// which has no meaning inside a class.
fn as_rust_syntax(go: &str) -> String {
    let mut rust = String::with_capacity(go.len() + 16);
    let mut chars = go.chars().peekable();
    let mut in_class = false;
    // True right after `[` or `[^`, where a `]` is a literal, not the end of the class.
    let mut class_start = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(escaped) = chars.next() else {
                    rust.push(c);
                    break;
                };
                match escaped {
                    'd' => rust.push_str("[0-9]"),
                    'D' => rust.push_str("[^0-9]"),
                    's' => rust.push_str(r"[\t\n\x0C\r ]"),
                    'S' => rust.push_str(r"[^\t\n\x0C\r ]"),
                    'w' => rust.push_str("[0-9A-Za-z_]"),
                    'W' => rust.push_str("[^0-9A-Za-z_]"),
                    'b' if !in_class => rust.push_str(r"(?-u:\b)"),
                    'B' if !in_class => rust.push_str(r"(?-u:\B)"),
                    other => {
                        rust.push('\\');
                        rust.push(other);
                    }
                }
                class_start = false;
            }
            '[' if !in_class => {
                rust.push(c);
                in_class = true;
                class_start = true;
                if chars.peek() == Some(&'^') {
                    rust.push('^');
                    chars.next();
                }
            }
            '[' if chars.peek() == Some(&':') => {
                // A POSIX class such as `[:alpha:]`, copied whole: it is ASCII in both.
                rust.push(c);
                for inner in chars.by_ref() {
                    rust.push(inner);
                    if inner == ']' {
                        break;
                    }
                }
                class_start = false;
            }
            ']' if in_class && !class_start => {
                rust.push(c);
                in_class = false;
            }
            _ => {
                rust.push(c);
                class_start = false;
            }
        }
    }
    rust
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        match &Pattern::compile(pattern).regex {
            Ok(regex) => regex.is_match(text),
            Err(e) => panic!("{pattern} does not compile: {e}"),
        }
    }

    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        let cases = [
            // (pattern, text, Go's verdict)
            (
                r"^https?://[^\s/$.?#][^\s]*$",
                "https://erp.example.com/api",
                true,
            ),
            (
                r"^https?://[^\s/$.?#][^\s]*$",
                "https://erp example.com",
                false,
            ),
            // A no-break space is not `\s` in Go.
            (
                r"^https?://[^\s/$.?#][^\s]*$",
                "https://erp\u{a0}example.com",
                true,
            ),
            (r"^\d+$", "123", true),
            // Arabic-Indic digits are not `\d` in Go.
            (r"^\d+$", "\u{661}\u{662}", false),
            (r"^\w+$", "plant_1", true),
            (r"^\w+$", "plänt", false),
            (r"^[\w.-]+$", "a.b-c_d", true),
            (r"^\S+$", "a\u{a0}b", true),
            (r"\bx\b", "a x b", true),
            (r"^[]a]+$", "]a]", true),
            (r"^[^]a]+$", "bcd", true),
            (r"^[[:alpha:]\d]+$", "ab12", true),
            (r"^a\.b$", "a.b", true),
            (r"^a\.b$", "axb", false),
            (r"^([0-9]+(ms|s|m|h|d))+$", "1h30m", true),
            (r"^([0-9]+(ms|s|m|h|d))+$", "7 days", false),
        ];
        for (pattern, text, go) in cases {
            assert_eq!(matches(pattern, text), go, "{pattern} on {text:?}");
        }
    }

    #[test]
    fn a_pattern_that_does_not_compile_says_why() {
        let pattern = Pattern::compile("^(unclosed$");
        assert!(pattern.regex.is_err());
        assert_eq!(pattern.source, "^(unclosed$");
    }
}
