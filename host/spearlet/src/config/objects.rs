//! `[spearlet.objects]`: the bounds of the objects SPEAR's `spearlet.ObjectService` keeps in the
//! Spearlet's memory (each object is also bounded by `spearlet.storage.max_object_size`).

use serde::{Deserialize, Serialize};
use spear_config::Problems;

/// `[spearlet.objects]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectLimits {
    /// Most bytes of values held at once, in MiB (1 to 65536).
    pub max_total_mb: u64,
    /// Most objects held at once (1 to 10,000,000).
    pub max_count: u64,
}

impl Default for ObjectLimits {
    fn default() -> Self {
        Self {
            max_total_mb: 256,
            max_count: 10_000,
        }
    }
}

impl ObjectLimits {
    /// Check the ranges, adding problems to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        if !(1..=65_536).contains(&self.max_total_mb) {
            problems.invalid(
                "spearlet.objects.max_total_mb",
                format!("{} is not between 1 and 65536", self.max_total_mb),
            );
        }
        if !(1..=10_000_000).contains(&self.max_count) {
            problems.invalid(
                "spearlet.objects.max_count",
                format!("{} is not between 1 and 10000000", self.max_count),
            );
        }
    }
}
