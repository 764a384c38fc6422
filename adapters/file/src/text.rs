//! Reading a registry file's text where serde cannot help: bounding its
//! nesting before the parser sees it, and finding the line of a key or a
//! hostname for messages.

/// How deep `[` and `{` may nest in a YAML file. A registry file needs
/// about six levels; the YAML parser's cost grows with the square of the
/// nesting, so 100,000 levels in a 200 KB file would take it a minute.
pub const MAX_NESTING: usize = 64;

/// Checks that flow collections (`[`, `{`) in YAML `text` nest at most
/// [`MAX_NESTING`] deep, before the parser sees it; on failure, the 1-based
/// line and column where the limit is passed. Brackets inside quoted
/// scalars and comments do not count. Block-style nesting is bounded by
/// indentation and the file size.
pub(crate) fn check_nesting(text: &str) -> Result<(), (usize, usize)> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut prev = '\n';
    let (mut line, mut column) = (1, 0);
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        column += 1;
        if ch == '\n' {
            (line, column) = (line + 1, 0);
        }
        match quote {
            Some('\'') if ch == '\'' => {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    column += 1;
                } else {
                    quote = None;
                }
            }
            Some('"') if ch == '\\' => {
                chars.next();
                column += 1;
            }
            Some('"') if ch == '"' => quote = None,
            Some(_) => {}
            None => match ch {
                // A quote opens a quoted scalar only where a scalar starts.
                '\'' | '"' if matches!(prev, '\n' | ' ' | '\t' | ':' | '-' | '[' | '{' | ',') => {
                    quote = Some(ch);
                }
                '#' if matches!(prev, '\n' | ' ' | '\t') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            (line, column) = (line + 1, 0);
                            break;
                        }
                    }
                    prev = '\n';
                    continue;
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err((line, column));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = ch;
    }
    Ok(())
}

/// The 1-based line of the top-level `key:`, or 0.
pub(crate) fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(&format!("{key}:")))
        .map_or(0, |i| i + 1)
}

/// The 1-based line that defines `hostname`, or 0. Serde does not keep
/// positions for values, so this finds the `hostname` key with that value.
pub(crate) fn hostname_line(text: &str, hostname: &str) -> usize {
    text.lines()
        .position(|l| {
            l.contains("hostname") && {
                let value = l.split_once(':').map(|(_, v)| v).unwrap_or("");
                let value = value
                    .trim()
                    .trim_end_matches(',')
                    .trim_matches(['"', '\'', ' ']);
                value == hostname
            }
        })
        .map_or(0, |i| i + 1)
}
