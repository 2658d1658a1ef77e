//! Which libtorch device a request runs on.
use crate::spec::{SpecError, SpecResult};
use tch::Device;

/// Parses `cpu`, `cuda`, `cuda:N` or `auto`. Returns the device and, for `auto`, a note
/// saying what was chosen and why.
pub fn resolve(requested: &str, pointer: &str) -> SpecResult<(Device, Option<String>)> {
    let gpus = if tch::Cuda::is_available() {
        tch::Cuda::device_count() as usize
    } else {
        0
    };
    match requested {
        "cpu" => Ok((Device::Cpu, None)),
        "auto" if gpus > 0 => Ok((Device::Cuda(0), Some("auto: CUDA is available, using cuda:0".into()))),
        "auto" => Ok((Device::Cpu, Some("auto: no CUDA device is available here, fell back to cpu".into()))),
        other => {
            let index = match other.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| SpecError::invalid(pointer, format!("unknown device {other:?}; expected cpu, cuda, cuda:N or auto")))?,
                None => {
                    return Err(SpecError::invalid(
                        pointer,
                        format!("unknown device {other:?}; expected cpu, cuda, cuda:N or auto"),
                    ))
                }
            };
            if gpus == 0 {
                Err(SpecError::unavailable(
                    pointer,
                    format!("{other} was requested but this server has no CUDA device; use \"cpu\" or \"auto\""),
                ))
            } else if index >= gpus {
                Err(SpecError::unavailable(
                    pointer,
                    format!(
                        "{other} was requested but this server has {gpus} CUDA device(s) (cuda:0..cuda:{})",
                        gpus - 1
                    ),
                ))
            } else {
                Ok((Device::Cuda(index), None))
            }
        }
    }
}

pub fn name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

pub fn libtorch_version() -> &'static str {
    env!("LAYERSCOPE_LIBTORCH_VERSION")
}
