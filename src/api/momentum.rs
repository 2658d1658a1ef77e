//! `POST /v1/momentum/equivalence`: runs the heavy-ball forms on supplied gradients (or on an
//! objective, each form at its own iterate) and says where they agree and why they stop.
use super::body::JsonBody;
use super::error::ApiResult;
use super::svg::{line_chart, Series};
use super::{json_response, svg_response, wants_svg, AppState};
use crate::analysis::momentum::{first_alpha_change, judge};
use crate::spec::error::child;
use crate::spec::json::{describe, float, uint, Obj};
use crate::spec::{SpecError, SpecResult};
use crate::torch::device;
use crate::torch::momentum::{Gradients, Objective, Run, SgdOptions};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// One named tensor of the parameter set, flattened in name order.
#[derive(Clone, Debug, PartialEq)]
struct Slot {
    name: String,
    shape: Vec<u64>,
    offset: usize,
    size: usize,
}

fn numbers(v: &Value, pointer: &str, max: usize) -> SpecResult<Vec<f64>> {
    let items = v
        .as_array()
        .ok_or_else(|| SpecError::invalid(pointer, format!("expected a list of numbers, got {}", describe(v))))?;
    if items.len() > max {
        return Err(SpecError::too_large(
            pointer,
            "max_tensor_elements",
            max as u64,
            format!("{} numbers is over the limit of {max}", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, x)| float(x, &child(pointer, i), f64::MIN, f64::MAX))
        .collect()
}

/// `[numbers]` (one tensor called `theta`), or `{name: [numbers] | {"shape": [...], "values": [...]}}`.
fn parameters(v: &Value, pointer: &str, max: usize) -> SpecResult<(Vec<Slot>, Vec<f64>)> {
    match v {
        Value::Array(_) => {
            let values = numbers(v, pointer, max)?;
            if values.is_empty() {
                return Err(SpecError::invalid(pointer, "is empty"));
            }
            Ok((
                vec![Slot {
                    name: "theta".into(),
                    shape: vec![values.len() as u64],
                    offset: 0,
                    size: values.len(),
                }],
                values,
            ))
        }
        Value::Object(map) if !map.is_empty() => {
            let mut slots = Vec::new();
            let mut all = Vec::new();
            for (name, t) in map {
                let p = child(pointer, name);
                let (shape, values) = match t {
                    Value::Object(_) => {
                        let o = Obj::new(t, &p)?;
                        let values = numbers(o.raw("values").unwrap_or(&Value::Null), &o.at("values"), max)?;
                        let shape = match o.array("shape")? {
                            Some(dims) => dims
                                .iter()
                                .enumerate()
                                .map(|(i, d)| uint(d, &child(&o.at("shape"), i), 1, max as u64))
                                .collect::<SpecResult<Vec<_>>>()?,
                            None => vec![values.len() as u64],
                        };
                        o.finish("shape, values")?;
                        if shape.iter().product::<u64>() != values.len() as u64 {
                            return Err(SpecError::invalid(
                                o.at("values"),
                                format!(
                                    "has {} numbers but shape {shape:?} needs {}",
                                    values.len(),
                                    shape.iter().product::<u64>()
                                ),
                            ));
                        }
                        (shape, values)
                    }
                    _ => {
                        let values = numbers(t, &p, max)?;
                        (vec![values.len() as u64], values)
                    }
                };
                if values.is_empty() {
                    return Err(SpecError::invalid(p, "is empty"));
                }
                slots.push(Slot {
                    name: name.clone(),
                    shape,
                    offset: all.len(),
                    size: values.len(),
                });
                all.extend(values);
                if all.len() > max {
                    return Err(SpecError::too_large(
                        pointer,
                        "max_tensor_elements",
                        max as u64,
                        format!("more than {max} parameters"),
                    ));
                }
            }
            Ok((slots, all))
        }
        other => Err(SpecError::invalid(
            pointer,
            format!("expected a list of numbers or an object of named tensors, got {}", describe(other)),
        )),
    }
}

/// A gradient step must have exactly theta0's names and shapes.
fn gradient_step(v: &Value, pointer: &str, layout: &[Slot], max: usize) -> SpecResult<Vec<f64>> {
    let (slots, values) = parameters(v, pointer, max)?;
    let same_names = slots.iter().map(|s| &s.name).eq(layout.iter().map(|s| &s.name));
    if !same_names {
        let want: Vec<&str> = layout.iter().map(|s| s.name.as_str()).collect();
        let got: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
        return Err(SpecError::invalid(pointer, format!("names {got:?} do not match theta0's {want:?}")));
    }
    for (s, l) in slots.iter().zip(layout) {
        if s.size != l.size {
            let p = if l.name == "theta" && slots.len() == 1 {
                pointer.to_string()
            } else {
                child(pointer, &l.name)
            };
            return Err(SpecError::invalid(
                p,
                format!(
                    "has {} numbers but theta0's {:?} has {} (shape {:?})",
                    s.size, l.name, l.size, l.shape
                ),
            ));
        }
    }
    Ok(values)
}

fn objective(v: &Value, n: usize) -> SpecResult<Objective> {
    let o = Obj::new(v, "/objective")?;
    let kind = o.choice("type", "quadratic", &["quadratic", "rosenbrock"])?;
    let obj = match kind {
        "quadratic" => {
            let rows = o
                .array("Q")?
                .ok_or_else(|| SpecError::invalid(o.at("Q"), "is required: an n x n matrix (list of rows)"))?;
            if rows.len() != n {
                return Err(SpecError::invalid(
                    o.at("Q"),
                    format!("has {} rows but theta0 has {n} numbers", rows.len()),
                ));
            }
            let mut q = Vec::with_capacity(n * n);
            for (i, r) in rows.iter().enumerate() {
                let row = numbers(r, &child(&o.at("Q"), i), n)?;
                if row.len() != n {
                    return Err(SpecError::invalid(
                        child(&o.at("Q"), i),
                        format!("has {} numbers, expected {n}", row.len()),
                    ));
                }
                q.extend(row);
            }
            let b = match o.raw("b") {
                Some(v) => numbers(v, &o.at("b"), n)?,
                None => vec![0.0; n],
            };
            if b.len() != n {
                return Err(SpecError::invalid(o.at("b"), format!("has {} numbers, expected {n}", b.len())));
            }
            Objective::Quadratic { q, b }
        }
        _ => {
            if n < 2 {
                return Err(SpecError::invalid("/theta0", "Rosenbrock needs at least 2 coordinates"));
            }
            Objective::Rosenbrock {
                a: o.f64_in("a", Some(1.0), -1e6, 1e6)?,
                b: o.f64_in("b", Some(100.0), 0.0, 1e6)?,
            }
        }
    };
    o.finish("type, Q, b (quadratic); a, b (rosenbrock)")?;
    Ok(obj)
}

/// Which steps' iterates come back: all, every n-th (plus the last), or the last only.
fn kept_steps(v: Option<&Value>, steps: usize) -> SpecResult<Vec<usize>> {
    let every = match v {
        None => 1,
        Some(Value::String(s)) if s == "full" => 1,
        Some(Value::String(s)) if s == "last" => return Ok(vec![0, steps]),
        Some(Value::String(s)) if s == "none" => return Ok(vec![]),
        Some(v @ Value::Object(_)) => {
            let o = Obj::new(v, "/return")?;
            let n = o.u64_in("every_n", None, 1, u32::MAX as u64)? as usize;
            o.finish("every_n")?;
            n
        }
        Some(other) => {
            return Err(SpecError::invalid(
                "/return",
                format!(
                    "expected \"full\", \"last\", \"none\" or {{\"every_n\": N}}, got {}",
                    describe(other)
                ),
            ))
        }
    };
    let mut keep: Vec<usize> = (0..=steps).step_by(every).collect();
    if keep.last() != Some(&steps) {
        keep.push(steps);
    }
    Ok(keep)
}

pub async fn handle(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let resp = compute(&state, &body).await?;
    if wants_svg(&query, &headers, &body)? {
        return Ok(svg_response(plot(
            &resp,
            body.get("plot").and_then(Value::as_str) == Some("difference"),
        )));
    }
    Ok(json_response(&resp))
}

/// Plots the first two coordinates of every form, or the per-step differences of every pair.
fn plot(resp: &Value, difference: bool) -> String {
    let nums = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let series: Vec<Series> = if difference {
        resp["pairs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| Series {
                name: format!("{} vs {}", p["a"].as_str().unwrap_or(""), p["b"].as_str().unwrap_or("")),
                points: nums(&p["max_abs_diff_per_step"])
                    .into_iter()
                    .enumerate()
                    .map(|(k, d)| (k as f64, d))
                    .collect(),
                dashed: false,
            })
            .collect()
    } else {
        let steps = nums(&resp["returned_steps"]);
        resp["trajectories"]
            .as_object()
            .into_iter()
            .flatten()
            .enumerate()
            .flat_map(|(f, (name, t))| {
                let rows: Vec<Vec<f64>> = t["theta"].as_array().into_iter().flatten().map(nums).collect();
                let coords = rows.first().map(|r| r.len().min(2)).unwrap_or(0);
                let steps = steps.clone();
                (0..coords).map(move |c| Series {
                    name: format!("{name} theta[{c}]"),
                    points: steps.iter().zip(&rows).map(|(k, r)| (*k, r[c])).collect(),
                    dashed: f % 2 == 1,
                })
            })
            .collect()
    };
    if difference {
        line_chart("max |theta_a - theta_b| per step", "step k", "difference", &series, true)
    } else {
        line_chart("iterates per form", "step k", "theta", &series, false)
    }
}

/// Runs the request and returns the JSON answer (also used by the grading endpoint).
pub async fn compute(state: &AppState, body: &Value) -> ApiResult<Value> {
    let cfg = &state.config;
    let max = cfg.max_tensor_elements as usize;
    let req = Obj::new(body, "")?;
    let theta_v = req.raw("theta0").ok_or_else(|| SpecError::invalid("/theta0", "is required"))?;
    let (layout, theta0) = parameters(theta_v, "/theta0", max)?;
    let gradients = match (req.array("gradients")?, req.raw("objective")) {
        (Some(_), Some(_)) => return Err(SpecError::invalid("/objective", "give either gradients or an objective, not both").into()),
        (Some(list), None) => {
            if list.is_empty() {
                return Err(SpecError::invalid("/gradients", "is empty: give one gradient per step").into());
            }
            if list.len() as u64 > cfg.max_steps {
                return Err(SpecError::too_large(
                    "/gradients",
                    "max_steps",
                    cfg.max_steps,
                    format!("{} steps is over the limit of {}", list.len(), cfg.max_steps),
                )
                .into());
            }
            if list.len().saturating_mul(theta0.len()) > max {
                return Err(SpecError::too_large(
                    "/gradients",
                    "max_tensor_elements",
                    max as u64,
                    format!("{} steps x {} numbers is over the limit of {max}", list.len(), theta0.len()),
                )
                .into());
            }
            let steps = list
                .iter()
                .enumerate()
                .map(|(k, g)| gradient_step(g, &format!("/gradients/{k}"), &layout, max))
                .collect::<SpecResult<Vec<_>>>()?;
            Gradients::Supplied(steps)
        }
        (None, Some(v)) => {
            let objective = objective(v, theta0.len())?;
            let steps = req.u64_in("steps", None, 1, cfg.max_steps)? as usize;
            Gradients::Objective { objective, steps }
        }
        (None, None) => {
            return Err(SpecError::invalid("/gradients", "is required (one gradient per step), or give an objective and steps").into())
        }
    };
    if matches!(gradients, Gradients::Supplied(_)) && req.has("steps") {
        let given = req.u64_in("steps", None, 1, cfg.max_steps)?;
        if let Gradients::Supplied(g) = &gradients {
            if given as usize != g.len() {
                return Err(SpecError::invalid("/steps", format!("says {given} but {} gradients were given", g.len())).into());
            }
        }
    }
    let steps = match &gradients {
        Gradients::Supplied(g) => g.len(),
        Gradients::Objective { steps, .. } => *steps,
    };
    let alpha = match req.raw("alpha") {
        None => return Err(SpecError::invalid("/alpha", "is required: a step size, or one per step").into()),
        Some(Value::Array(items)) => {
            if items.len() != steps {
                return Err(SpecError::invalid("/alpha", format!("has {} step sizes but there are {steps} steps", items.len())).into());
            }
            items
                .iter()
                .enumerate()
                .map(|(k, v)| float(v, &format!("/alpha/{k}"), 0.0, 1e12))
                .collect::<SpecResult<Vec<_>>>()?
        }
        Some(v) => vec![float(v, "/alpha", 0.0, 1e12)?; steps],
    };
    let beta = req.f64_in("beta", None, 0.0, 1.0)?;
    if beta >= 1.0 {
        return Err(SpecError::invalid("/beta", "must be in [0, 1): heavy-ball momentum diverges at beta = 1").into());
    }
    let dtype = req.choice("dtype", "float64", &["float64", "float32"])?;
    let kind = if dtype == "float64" { tch::Kind::Double } else { tch::Kind::Float };
    let tolerance = req.f64_in("tolerance", Some(if dtype == "float64" { 1e-10 } else { 1e-4 }), 0.0, 1.0)?;
    let (dev, device_note) = device::resolve(req.str_or("device", "cpu")?, "/device")?;
    let sutskever = req.bool("sutskever", false)?;
    let sgd = match req.raw("pytorch_sgd") {
        None | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(SgdOptions {
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }),
        Some(v) => {
            let o = Obj::new(v, "/pytorch_sgd")?;
            let opts = SgdOptions {
                dampening: o.f64_in("dampening", Some(0.0), 0.0, 1.0)?,
                nesterov: o.bool("nesterov", false)?,
                weight_decay: o.f64_in("weight_decay", Some(0.0), 0.0, 1e6)?,
            };
            o.finish("dampening, nesterov, weight_decay")?;
            if opts.nesterov && (beta == 0.0 || opts.dampening != 0.0) {
                return Err(SpecError::invalid(
                    "/pytorch_sgd/nesterov",
                    "Nesterov momentum needs beta > 0 and zero dampening (torch.optim.SGD refuses it too)",
                )
                .into());
            }
            Some(opts)
        }
    };
    let keep = kept_steps(req.raw("return"), steps)?;
    let forms = 2 + usize::from(sutskever) + usize::from(sgd.is_some()) + 1;
    if keep.len().saturating_mul(theta0.len()).saturating_mul(forms * 2) > max {
        return Err(SpecError::too_large(
            "/return",
            "max_tensor_elements",
            max as u64,
            "the returned trajectories would exceed the limit; use \"return\": \"last\" or {\"every_n\": N}",
        )
        .into());
    }
    req.choice("format", "json", &["json", "svg"])?;
    req.choice("plot", "coordinates", &["coordinates", "difference"])?;
    req.finish("theta0, gradients, objective, steps, alpha, beta, dtype, device, tolerance, sutskever, pytorch_sgd, return, format, plot")?;

    let alpha_change = first_alpha_change(&alpha);
    let uses_objective = matches!(gradients, Gradients::Objective { .. });
    let run = Run {
        theta0,
        gradients,
        alpha: alpha.clone(),
        beta,
        kind,
        device: dev,
        sutskever,
        rescaled: alpha_change.is_some(),
        sgd: sgd.clone(),
        keep: keep.clone(),
    };
    let outcome = state
        .run_torch(move || run.run())
        .await?
        .map_err(|e| SpecError::invalid("", format!("libtorch could not run the forms: {e}")))?;

    let pairs: Vec<_> = outcome
        .pairs
        .iter()
        .enumerate()
        .map(|(p, &(a, b))| judge(outcome.names[a], outcome.names[b], &outcome.diffs[p], &outcome.scales[p], tolerance))
        .collect();
    let pair = |a: &str, b: &str| pairs.iter().find(|p| p.a == a && p.b == b || p.a == b && p.b == a);
    let i_ii = pair("form_i", "form_ii").expect("both forms always run");
    let mut explanation: Vec<String> = Vec::new();
    if let Some(k) = alpha_change {
        explanation.push(format!(
            "the step size changes at step {k} ({} -> {}): Form II's v accumulates raw gradients, so after the change it equals Form I with its momentum term scaled by alpha_k/alpha_(k-1) (form_i_rescaled), not Form I itself; Sutskever's form stores alpha*g in u and stays equal to Form I",
            alpha[k - 1], alpha[k]
        ));
        if let Some(p) = pair("form_i_rescaled", "form_ii") {
            explanation.push(format!(
                "form_i_rescaled vs form_ii: {}",
                if p.equivalent {
                    "equivalent, as the algebra says"
                } else {
                    "NOT equivalent (rounding or a bug: see the differences)"
                }
            ));
        }
    } else if i_ii.equivalent {
        explanation.push("with a constant step size, v_k = -(theta_k - theta_(k-1))/alpha turns Form II into Form I step by step (the induction in the course's P3); the differences are rounding only".into());
    }
    if uses_objective {
        explanation.push("each form evaluates the gradient at its own iterate, so rounding differences feed back into later gradients and can grow, especially on non-convex objectives".into());
    }
    if let Some(o) = &sgd {
        if o.dampening != 0.0 {
            explanation.push(format!("pytorch_sgd uses dampening {}: its buffer is beta*b + (1-dampening)*g after the first step, so it is Form II only when dampening = 0", o.dampening));
        }
        if o.weight_decay != 0.0 {
            explanation.push(format!(
                "pytorch_sgd adds weight_decay*theta = {}*theta to every gradient before the momentum update",
                o.weight_decay
            ));
        }
        if o.nesterov {
            explanation.push("pytorch_sgd with nesterov steps along g + beta*b instead of b: a different method".into());
        }
    }
    let all_equivalent = pairs.iter().all(|p| p.equivalent);

    let mut trajectories = Map::new();
    for (f, name) in outcome.names.iter().enumerate() {
        let mut t = json!({"theta": outcome.snapshots[f]});
        if let Some((aux, vals)) = &outcome.aux[f] {
            t[*aux] = json!(vals);
        }
        trajectories.insert(name.to_string(), t);
    }
    let resp = json!({
        "verdict": if i_ii.equivalent { "equivalent" } else { "not_equivalent" },
        "all_forms_equivalent": all_equivalent,
        "explanation": explanation,
        "steps": steps,
        "alpha_constant": alpha_change.is_none(),
        "parameters": layout.iter().map(|s| json!({"name": s.name, "shape": s.shape, "offset": s.offset, "size": s.size})).collect::<Vec<_>>(),
        "returned_steps": keep,
        "trajectories": trajectories,
        "pairs": pairs,
        "tolerance": tolerance,
        "tolerance_rule": "a pair differs at step k when max|theta_a - theta_b| > tolerance * max(1, max|theta_a|, max|theta_b|)",
        "dtype": dtype,
        "device": device::name(dev),
        "device_note": device_note,
        "libtorch_version": device::libtorch_version(),
        "millis": (outcome.millis * 1000.0).round() / 1000.0,
    });
    Ok(resp)
}
