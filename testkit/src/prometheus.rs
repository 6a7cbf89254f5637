//! Reading a Prometheus text scrape in tests: every series explained, and one sample's value.

use std::collections::HashSet;

/// Panics naming every series that has a `# TYPE` line but no `# HELP` line.
pub fn assert_every_series_described(scrape: &str) {
    let described: HashSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let typed: Vec<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!typed.is_empty(), "no series at all:\n{scrape}");
    let undescribed: Vec<&str> = typed
        .into_iter()
        .filter(|name| !described.contains(name))
        .collect();
    assert!(
        undescribed.is_empty(),
        "series without # HELP: {undescribed:?}"
    );
}

/// The value of the sample written exactly as `series` (name and labels as rendered, e.g.
/// `inside_jobs_total{outcome="done"}`), if the scrape has it.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let value = l.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Panics unless the scrape has `inside_build_info{version="<this crate's version>"} 1`.
pub fn assert_build_info(scrape: &str, version: &str) {
    assert_eq!(
        sample(
            scrape,
            &format!("inside_build_info{{version=\"{version}\"}}")
        ),
        Some(1.0),
        "{scrape}"
    );
}
