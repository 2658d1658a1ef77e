//! Judging momentum trajectories from their per-step differences: pure arithmetic, no libtorch.
use serde::Serialize;
use utoipa::ToSchema;

/// Two forms compared step by step.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct PairReport {
    pub a: String,
    pub b: String,
    /// max_i |theta_a[k][i] - theta_b[k][i]| for every step k = 0..=K (null where not finite).
    #[schema(value_type = Vec<Option<f64>>)]
    pub max_abs_diff_per_step: Vec<f64>,
    /// Null when a difference is not finite (a diverging run).
    #[schema(value_type = Option<f64>)]
    pub max_abs_diff: f64,
    /// First step k whose difference exceeds `tolerance * max(1, max|theta_a|, max|theta_b|)`.
    pub first_step_over_tolerance: Option<usize>,
    pub equivalent: bool,
}

/// Judges one pair from its per-step differences and scales (NaN counts as a difference).
pub fn judge(a: &str, b: &str, diffs: &[f64], scales: &[f64], tolerance: f64) -> PairReport {
    let first = diffs.iter().zip(scales).position(|(d, s)| !(*d <= tolerance * s));
    PairReport {
        a: a.into(),
        b: b.into(),
        max_abs_diff_per_step: diffs.to_vec(),
        max_abs_diff: diffs
            .iter()
            .cloned()
            .fold(0.0, |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) }),
        first_step_over_tolerance: first,
        equivalent: first.is_none(),
    }
}

/// The first step whose step size differs from the one before, if any.
pub fn first_alpha_change(alpha: &[f64]) -> Option<usize> {
    alpha.windows(2).position(|w| w[0] != w[1]).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_is_relative_to_the_iterates_scale() {
        let r = judge("a", "b", &[0.0, 1e-8], &[1.0, 1000.0], 1e-10);
        assert!(r.equivalent);
        let r = judge("a", "b", &[0.0, 1e-8], &[1.0, 1000.0], 1e-12);
        assert_eq!(r.first_step_over_tolerance, Some(1));
        assert!(!judge("a", "b", &[0.0, f64::NAN], &[1.0, 1.0], 1.0).equivalent);
        assert_eq!(first_alpha_change(&[0.1, 0.1, 0.01]), Some(2));
        assert_eq!(first_alpha_change(&[0.1, 0.1]), None);
    }
}
