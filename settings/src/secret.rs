//! What makes a `SECRET_KEY` acceptable outside `DEBUG=true`: not a known
//! placeholder from the seed's or this repository's examples, and enough
//! estimated entropy that guessing it is out of reach. The key signs every
//! access token, so a guessable key lets anyone mint a token for any user.

/// Placeholder keys from the Python seed's and this repository's examples.
const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "secret",
    "your-secret-key",
    "your-secret-key-here",
    "dev-secret-key",
    "supersecret",
    "password",
];

/// Fragments that mark an example value, wherever they appear in a key.
const PLACEHOLDER_FRAGMENTS: &[&str] = &["change-me", "changeme", "change_me", "your-secret"];

/// `openssl rand -hex 32` gives 64 characters of 4 bits each; 128 bits is the
/// floor of what HS256 needs to resist guessing.
pub const MIN_ENTROPY_BITS: f64 = 128.0;

/// Even a long key drawn from a handful of characters (`abababab…`) is weak.
/// Random hex (16 symbols) shows far more than this: 64 random hex
/// characters miss more than six of the 16 with odds under one in 10^8.
pub const MIN_DISTINCT_CHARS: usize = 10;

/// Why `key` must not sign tokens in production, or `None` when it may.
pub fn weakness(key: &str) -> Option<String> {
    let trimmed = key.trim();
    let lower = trimmed.to_ascii_lowercase();
    if PLACEHOLDERS.contains(&lower.as_str())
        || PLACEHOLDER_FRAGMENTS.iter().any(|f| lower.contains(f))
    {
        return Some("is a placeholder from an example".into());
    }
    if trimmed.len() < 32 {
        return Some("must be at least 32 bytes".into());
    }
    let distinct = distinct_chars(trimmed);
    if distinct < MIN_DISTINCT_CHARS {
        return Some(format!(
            "uses only {distinct} distinct characters (at least {MIN_DISTINCT_CHARS} expected of a random key)"
        ));
    }
    let bits = estimated_entropy_bits(trimmed);
    if bits < MIN_ENTROPY_BITS {
        return Some(format!(
            "has an estimated entropy of {bits:.0} bits (at least {MIN_ENTROPY_BITS:.0} needed)"
        ));
    }
    None
}

fn distinct_chars(key: &str) -> usize {
    let mut seen: Vec<char> = key.chars().collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

/// Length times the Shannon entropy of the key's own character frequencies:
/// an upper bound for keys with structure (words, repeats), close to the truth
/// for random ones (64 random hex characters estimate at about 240 bits).
pub fn estimated_entropy_bits(key: &str) -> f64 {
    let chars: Vec<char> = key.chars().collect();
    if chars.is_empty() {
        return 0.0;
    }
    let n = chars.len() as f64;
    let mut sorted = chars.clone();
    sorted.sort_unstable();
    let mut per_char = 0.0;
    for run in sorted.chunk_by(|a, b| a == b) {
        let p = run.len() as f64 / n;
        per_char -= p * p.log2();
    }
    per_char * n
}
