//! The course's bound on ||dL/db_i|| for sigmoid-style MLPs (PROBLEMS.md, P2), and verdicts:
//! pure arithmetic over plain numbers, no libtorch.
//!
//! For y_k = g(A_k y_(k-1) + b_k), the Jacobian dy_L/db_i = A_L D_(L-1) A_(L-1) ... A_(i+1) D_i with
//! D_k = diag(g'(~y_k)). Since ||D_k|| <= sup g' (1/4 for the sigmoid),
//! ||dy_L/db_i|| <= prod_(activations after i) sup g'  x  prod_(linear layers after i) ||A_k||_2,
//! and for a loss L summed over a batch, ||dL/db_i|| <= sum_s ||dL/dy_L(s)|| times that.

/// One step of an MLP chain, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum ChainItem {
    /// A linear layer: its path and the spectral norm of its weight.
    Linear { path: String, spectral_norm: f64 },
    /// An element-wise activation with sup g'.
    Activation { max_derivative: f64 },
}

/// The bound on ||dL/db_i|| for every linear layer, by path, in chain order.
pub fn bias_gradient_bounds(chain: &[ChainItem], output_grad_norm_sum: f64) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    // Walk backwards, accumulating the product of everything after the current layer.
    let mut after = 1.0;
    for item in chain.iter().rev() {
        match item {
            ChainItem::Linear { path, spectral_norm } => {
                out.push((path.clone(), output_grad_norm_sum * after));
                after *= spectral_norm;
            }
            ChainItem::Activation { max_derivative } => after *= max_derivative,
        }
    }
    out.reverse();
    out
}

/// A layer's (or the network's) gradient verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = GradientVerdict)]
pub enum Verdict {
    Vanishing,
    Exploding,
    Healthy,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Vanishing => "vanishing",
            Verdict::Exploding => "exploding",
            Verdict::Healthy => "healthy",
        }
    }
}

/// A layer's verdict from its gradient norm relative to the last layer's.
pub fn verdict(ratio: f64, vanishing_below: f64, exploding_above: f64) -> Verdict {
    if !ratio.is_finite() || ratio > exploding_above {
        Verdict::Exploding
    } else if ratio < vanishing_below {
        Verdict::Vanishing
    } else {
        Verdict::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_multiplies_what_comes_after_each_layer() {
        let chain = vec![
            ChainItem::Linear {
                path: "0".into(),
                spectral_norm: 2.0,
            },
            ChainItem::Activation { max_derivative: 0.25 },
            ChainItem::Linear {
                path: "2".into(),
                spectral_norm: 3.0,
            },
            ChainItem::Activation { max_derivative: 0.25 },
            ChainItem::Linear {
                path: "4".into(),
                spectral_norm: 5.0,
            },
        ];
        let b = bias_gradient_bounds(&chain, 1.0);
        // last layer: dL/db_L = dL/dy_L, bound 1; layer 2: 1/4 * 5; layer 0: 1/4 * 3 * 1/4 * 5
        assert_eq!(
            b,
            vec![("0".into(), 0.25 * 3.0 * 0.25 * 5.0), ("2".into(), 0.25 * 5.0), ("4".into(), 1.0)]
        );
        assert_eq!(verdict(1e-5, 1e-3, 1e3), Verdict::Vanishing);
        assert_eq!(verdict(f64::NAN, 1e-3, 1e3), Verdict::Exploding);
        assert_eq!(verdict(0.5, 1e-3, 1e3), Verdict::Healthy);
    }
}
