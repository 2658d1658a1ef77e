//! Runs the heavy-ball momentum forms on libtorch tensors.
//!
//! Form I:     theta' = theta - a_k g + beta (theta - theta_prev),   theta_{-1} = theta_0
//! Form II:    v' = g + beta v,  theta' = theta - a_k v'            v_0 = 0
//! Sutskever:  u' = beta u - a_k g,  theta' = theta + u'            u_0 = 0
//! Form I rescaled: theta' = theta - a_k g + beta (a_k / a_{k-1}) (theta - theta_prev), which is
//!             what Form II equals when the step size changes.
//! pytorch_sgd: libtorch's own torch::optim::SGD (through tch), fed the gradient by back-propagating
//!             sum(theta * g) (supplied gradients) or the objective itself.
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug)]
pub enum Objective {
    /// 1/2 x^T Q x - b^T x
    Quadratic { q: Vec<f64>, b: Vec<f64> },
    /// sum_i b (x_{i+1} - x_i^2)^2 + (a - x_i)^2
    Rosenbrock { a: f64, b: f64 },
}

#[derive(Clone, Debug)]
pub enum Gradients {
    Supplied(Vec<Vec<f64>>),
    Objective { objective: Objective, steps: usize },
}

#[derive(Clone, Debug)]
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
}

/// One form's iterates (theta_0 ..= theta_K) and its auxiliary sequence (v or u) if it has one.
#[derive(Clone, Debug)]
pub struct Trajectory {
    pub name: &'static str,
    pub theta: Vec<Vec<f64>>,
    pub aux: Option<(&'static str, Vec<Vec<f64>>)>,
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu).flatten(0, -1)).unwrap_or_default()
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

    /// The gradient for step `k` at `theta` (autograd for objectives).
    fn grad(&self, k: usize, theta: &Tensor) -> Tensor {
        match &self.gradients {
            Gradients::Supplied(g) => self.tensor(&g[k]),
            Gradients::Objective { objective, .. } => {
                let x = theta.detach().set_requires_grad(true);
                let f = self.objective_value(objective, &x);
                f.backward();
                x.grad().detach()
            }
        }
    }

    fn objective_value(&self, objective: &Objective, x: &Tensor) -> Tensor {
        match objective {
            Objective::Quadratic { q, b } => {
                let n = x.size()[0];
                let q = self.tensor(q).reshape([n, n]);
                let b = self.tensor(b);
                (x * q.mv(x)).sum(self.kind) * 0.5 - (&b * x).sum(self.kind)
            }
            Objective::Rosenbrock { a, b } => {
                let n = x.size()[0];
                let head = x.narrow(0, 0, n - 1);
                let tail = x.narrow(0, 1, n - 1);
                let t1: Tensor = (tail - head.square()).square() * *b;
                let t2 = (head * -1.0 + *a).square();
                (t1 + t2).sum(self.kind)
            }
        }
    }

    pub fn form_i(&self, rescaled: bool) -> Trajectory {
        let _g = tch::no_grad_guard();
        let mut theta = self.tensor(&self.theta0);
        let mut prev = theta.copy();
        let mut out = vec![to_vec(&theta)];
        for k in 0..self.steps() {
            let g = self.grad(k, &theta);
            let scale = if rescaled && k > 0 { self.alpha[k] / self.alpha[k - 1] } else { 1.0 };
            let next = &theta - &g * self.alpha[k] + (&theta - &prev) * (self.beta * scale);
            prev = theta;
            theta = next;
            out.push(to_vec(&theta));
        }
        Trajectory { name: if rescaled { "form_i_rescaled" } else { "form_i" }, theta: out, aux: None }
    }

    pub fn form_ii(&self) -> Trajectory {
        let _g = tch::no_grad_guard();
        let mut theta = self.tensor(&self.theta0);
        let mut v = theta.zeros_like();
        let (mut out, mut vs) = (vec![to_vec(&theta)], vec![to_vec(&v)]);
        for k in 0..self.steps() {
            let g = self.grad(k, &theta);
            v = g + &v * self.beta;
            theta = &theta - &v * self.alpha[k];
            out.push(to_vec(&theta));
            vs.push(to_vec(&v));
        }
        Trajectory { name: "form_ii", theta: out, aux: Some(("v", vs)) }
    }

    pub fn sutskever(&self) -> Trajectory {
        let _g = tch::no_grad_guard();
        let mut theta = self.tensor(&self.theta0);
        let mut u = theta.zeros_like();
        let (mut out, mut us) = (vec![to_vec(&theta)], vec![to_vec(&u)]);
        for k in 0..self.steps() {
            let g = self.grad(k, &theta);
            u = &u * self.beta - g * self.alpha[k];
            theta = &theta + &u;
            out.push(to_vec(&theta));
            us.push(to_vec(&u));
        }
        Trajectory { name: "sutskever", theta: out, aux: Some(("u", us)) }
    }

    /// libtorch's torch::optim::SGD, stepped with the same gradients (or the same objective).
    pub fn pytorch_sgd(&self, o: &SgdOptions) -> Result<Trajectory, String> {
        let mut vs = VarStore::new(self.device);
        vs.set_kind(self.kind);
        let theta = vs.root().var_copy("theta", &self.tensor(&self.theta0));
        let cfg = tch::nn::Sgd { momentum: self.beta, dampening: o.dampening, wd: o.weight_decay, nesterov: o.nesterov };
        let mut opt = cfg.build(&vs, self.alpha.first().copied().unwrap_or(0.0)).map_err(|e| e.to_string())?;
        let mut out = vec![to_vec(&theta)];
        for k in 0..self.steps() {
            opt.set_lr(self.alpha[k]);
            opt.zero_grad();
            let loss = match &self.gradients {
                Gradients::Supplied(g) => (&theta * self.tensor(&g[k])).sum(self.kind),
                Gradients::Objective { objective, .. } => self.objective_value(objective, &theta),
            };
            loss.backward();
            opt.step();
            out.push(to_vec(&theta));
        }
        Ok(Trajectory { name: "pytorch_sgd", theta: out, aux: None })
    }

    pub fn all(&self) -> Result<Vec<Trajectory>, String> {
        let mut t = vec![self.form_i(false), self.form_ii()];
        if self.sutskever {
            t.push(self.sutskever());
        }
        if self.rescaled {
            t.push(self.form_i(true));
        }
        if let Some(o) = &self.sgd {
            t.push(self.pytorch_sgd(o)?);
        }
        Ok(t)
    }
}
