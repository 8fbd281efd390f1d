//! A run's figures as `key value` lines, so a script can keep one file per
//! round and a later `table` command can read them back; and the statistics
//! the tables show.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::Result;

/// Everything a run measured, by key.
#[derive(Default)]
pub struct Figures(pub BTreeMap<String, f64>);

impl Figures {
    pub fn put(&mut self, key: &str, value: f64) {
        self.0.insert(key.to_owned(), value);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        for (key, value) in &self.0 {
            let _ = writeln!(text, "{key} {value}");
        }
        text
    }

    pub fn load(path: &Path) -> Result<Figures> {
        let text = std::fs::read_to_string(path)?;
        let mut map = BTreeMap::new();
        for line in text.lines() {
            if let Some((key, value)) = line.split_once(' ') {
                map.insert(key.to_owned(), value.trim().parse()?);
            }
        }
        Ok(Figures(map))
    }

    /// The figure, or NaN (shown as `-`) if the run did not record it.
    pub fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(f64::NAN)
    }
}

/// The `p`th percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median, ignoring missing (NaN) values.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// A figure with as many digits as it deserves; `-` when missing.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "-".to_owned()
    } else if (value - value.round()).abs() < 1e-6 || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// `a / b` to two decimals; `-` when both are zero (failure counts), `n/a`
/// when it means nothing.
pub fn ratio(a: f64, b: f64) -> String {
    if a == 0.0 && b == 0.0 {
        "-".to_owned()
    } else if b == 0.0 || a.is_nan() || b.is_nan() {
        "n/a".to_owned()
    } else {
        format!("{:.2}", a / b)
    }
}

/// Runs a tool's measurement on one thread (the tool must stay light and
/// leave the other core to what it measures), prints its figures and writes
/// them to `out` if given.
pub fn run_and_report(
    out: Option<&Path>,
    measure: impl std::future::Future<Output = Result<Figures>>,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = runtime.block_on(measure)?.render();
    print!("{text}");
    if let Some(out) = out {
        std::fs::write(out, text)?;
    }
    Ok(())
}
