//! Runs the heavy-ball momentum forms side by side on libtorch tensors.
//!
//! Form I:     theta' = theta - a_k g + beta (theta - theta_prev),   theta_{-1} = theta_0
//! Form II:    v' = g + beta v,  theta' = theta - a_k v'             v_0 = 0
//! Sutskever:  u' = beta u - a_k g,  theta' = theta + u'             u_0 = 0
//! Form I rescaled: theta' = theta - a_k g + beta (a_k / a_{k-1}) (theta - theta_prev): what Form II
//!             equals when the step size changes.
//! pytorch_sgd: libtorch's own torch::optim::SGD (through tch), fed the gradient by back-propagating
//!             sum(theta * g) (supplied gradients) or the objective itself.
//!
//! The forms advance in lockstep, so only the per-step differences and the requested snapshots
//! are kept: a million parameters over a hundred steps never materialise whole trajectories.
use super::to_f64_vec;
use tch::nn::{Optimizer, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug)]
pub enum Objective {
    /// 1/2 x^T Q x - b^T x, Q row-major n x n
    Quadratic { q: Vec<f64>, b: Vec<f64> },
    /// sum_i b (x_{i+1} - x_i^2)^2 + (a - x_i)^2
    Rosenbrock { a: f64, b: f64 },
}

#[derive(Clone, Debug)]
pub enum Gradients {
    Supplied(Vec<Vec<f64>>),
    Objective { objective: Objective, steps: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub struct SgdOptions {
    pub dampening: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

#[derive(Clone, Debug)]
pub struct Run {
    pub theta0: Vec<f64>,
    pub gradients: Gradients,
    pub alpha: Vec<f64>,
    pub beta: f64,
    pub kind: Kind,
    pub device: Device,
    pub sutskever: bool,
    pub rescaled: bool,
    pub sgd: Option<SgdOptions>,
    /// Steps (0 = theta_0) whose iterates are returned.
    pub keep: Vec<usize>,
}

/// What comes back: plain data only.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub names: Vec<&'static str>,
    /// `snapshots[f][s]` = theta of form `f` at `keep[s]`.
    pub snapshots: Vec<Vec<Vec<f64>>>,
    /// `aux[f]` = (name, values at `keep`) for forms with a v or u sequence.
    pub aux: Vec<Option<(&'static str, Vec<Vec<f64>>)>>,
    /// `diffs[p][k]` = max |theta_a - theta_b| at step k, for every pair (a < b).
    pub pairs: Vec<(usize, usize)>,
    pub diffs: Vec<Vec<f64>>,
    /// max(1, max|theta_a|, max|theta_b|) at step k, for the relative tolerance.
    pub scales: Vec<Vec<f64>>,
    pub millis: f64,
}

enum State {
    FormI { theta: Tensor, prev: Tensor, rescaled: bool },
    FormII { theta: Tensor, v: Tensor },
    Sutskever { theta: Tensor, u: Tensor },
    Sgd { _vs: VarStore, theta: Tensor, opt: Optimizer },
}

impl State {
    fn theta(&self) -> &Tensor {
        match self {
            State::FormI { theta, .. } | State::FormII { theta, .. } | State::Sutskever { theta, .. } | State::Sgd { theta, .. } => theta,
        }
    }
    fn aux(&self) -> Option<(&'static str, &Tensor)> {
        match self {
            State::FormII { v, .. } => Some(("v", v)),
            State::Sutskever { u, .. } => Some(("u", u)),
            _ => None,
        }
    }
}

impl Run {
    fn tensor(&self, v: &[f64]) -> Tensor {
        Tensor::from_slice(v).to_kind(self.kind).to_device(self.device)
    }

    pub fn steps(&self) -> usize {
        match &self.gradients {
            Gradients::Supplied(g) => g.len(),
            Gradients::Objective { steps, .. } => *steps,
        }
    }

    fn objective_value(&self, objective: &Objective, x: &Tensor) -> Tensor {
        match objective {
            Objective::Quadratic { q, b } => {
                let n = x.size()[0];
                let q = self.tensor(q).reshape([n, n]);
                (x * q.mv(x)).sum(self.kind) * 0.5 - (self.tensor(b) * x).sum(self.kind)
            }
            Objective::Rosenbrock { a, b } => {
                let n = x.size()[0];
                let head = x.narrow(0, 0, n - 1);
                let tail = x.narrow(0, 1, n - 1);
                let t1 = (tail - head.square()).square() * *b;
                let t2 = (head * -1.0 + *a).square();
                (t1 + t2).sum(self.kind)
            }
        }
    }

    /// The gradient at `theta`: the supplied one, or the objective's by autograd.
    fn grad(&self, supplied: &Option<Tensor>, theta: &Tensor) -> Tensor {
        match (&self.gradients, supplied) {
            (_, Some(g)) => g.shallow_clone(),
            (Gradients::Objective { objective, .. }, None) => {
                let x = theta.detach().set_requires_grad(true);
                self.objective_value(objective, &x).backward();
                x.grad().detach()
            }
            (Gradients::Supplied(_), None) => unreachable!("supplied gradients are always passed"),
        }
    }

    fn start(&self) -> Result<(Vec<&'static str>, Vec<State>), String> {
        let theta = self.tensor(&self.theta0);
        let mut names = vec!["form_i", "form_ii"];
        let mut states = vec![
            State::FormI {
                theta: theta.copy(),
                prev: theta.copy(),
                rescaled: false,
            },
            State::FormII {
                theta: theta.copy(),
                v: theta.zeros_like(),
            },
        ];
        if self.sutskever {
            names.push("sutskever");
            states.push(State::Sutskever {
                theta: theta.copy(),
                u: theta.zeros_like(),
            });
        }
        if self.rescaled {
            names.push("form_i_rescaled");
            states.push(State::FormI {
                theta: theta.copy(),
                prev: theta.copy(),
                rescaled: true,
            });
        }
        if let Some(o) = &self.sgd {
            let mut vs = VarStore::new(self.device);
            vs.set_kind(self.kind);
            let var = vs.root().var_copy("theta", &theta);
            let cfg = tch::nn::Sgd {
                momentum: self.beta,
                dampening: o.dampening,
                wd: o.weight_decay,
                nesterov: o.nesterov,
            };
            let opt = cfg
                .build(&vs, self.alpha.first().copied().unwrap_or(0.0))
                .map_err(|e| e.to_string())?;
            names.push("pytorch_sgd");
            states.push(State::Sgd { _vs: vs, theta: var, opt });
        }
        Ok((names, states))
    }

    fn advance(&self, state: &mut State, k: usize, supplied: &Option<Tensor>) {
        let a = self.alpha[k];
        match state {
            State::FormI { theta, prev, rescaled } => {
                let g = self.grad(supplied, theta);
                let scale = if *rescaled && k > 0 { a / self.alpha[k - 1] } else { 1.0 };
                let _guard = tch::no_grad_guard();
                let next = &*theta - g * a + (&*theta - &*prev) * (self.beta * scale);
                *prev = std::mem::replace(theta, next);
            }
            State::FormII { theta, v } => {
                let g = self.grad(supplied, theta);
                let _guard = tch::no_grad_guard();
                *v = g + &*v * self.beta;
                *theta = &*theta - &*v * a;
            }
            State::Sutskever { theta, u } => {
                let g = self.grad(supplied, theta);
                let _guard = tch::no_grad_guard();
                *u = &*u * self.beta - g * a;
                *theta = &*theta + &*u;
            }
            State::Sgd { theta, opt, .. } => {
                opt.set_lr(a);
                opt.zero_grad();
                let loss = match (&self.gradients, supplied) {
                    (_, Some(g)) => (&*theta * g).sum(self.kind),
                    (Gradients::Objective { objective, .. }, None) => self.objective_value(objective, theta),
                    _ => unreachable!(),
                };
                loss.backward();
                opt.step();
            }
        }
    }

    pub fn run(&self) -> Result<Outcome, String> {
        let started = std::time::Instant::now();
        let (names, mut states) = self.start()?;
        let n = states.len();
        let pairs: Vec<(usize, usize)> = (0..n).flat_map(|a| (a + 1..n).map(move |b| (a, b))).collect();
        let mut out = Outcome {
            names,
            snapshots: vec![Vec::new(); n],
            aux: states.iter().map(|s| s.aux().map(|(name, _)| (name, Vec::new()))).collect(),
            diffs: vec![Vec::new(); pairs.len()],
            scales: vec![Vec::new(); pairs.len()],
            pairs,
            millis: 0.0,
        };
        let mut keep = self.keep.iter().peekable();
        for k in 0..=self.steps() {
            if k > 0 {
                let supplied = match &self.gradients {
                    Gradients::Supplied(g) => Some(self.tensor(&g[k - 1])),
                    Gradients::Objective { .. } => None,
                };
                for s in states.iter_mut() {
                    self.advance(s, k - 1, &supplied);
                }
            }
            {
                let _guard = tch::no_grad_guard();
                let maxes: Vec<f64> = states.iter().map(|s| s.theta().abs().max().double_value(&[])).collect();
                for (p, &(a, b)) in out.pairs.iter().enumerate() {
                    let d = (states[a].theta() - states[b].theta()).abs().max().double_value(&[]);
                    out.diffs[p].push(d);
                    out.scales[p].push(1f64.max(maxes[a]).max(maxes[b]));
                }
            }
            if keep.peek() == Some(&&k) {
                keep.next();
                for (f, s) in states.iter().enumerate() {
                    out.snapshots[f].push(to_f64_vec(s.theta()));
                    if let (Some((_, vals)), Some((_, t))) = (out.aux[f].as_mut(), s.aux()) {
                        vals.push(to_f64_vec(t));
                    }
                }
            }
        }
        out.millis = started.elapsed().as_secs_f64() * 1e3;
        Ok(out)
    }
}
