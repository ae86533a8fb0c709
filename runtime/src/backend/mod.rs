//! Device selection and the quantized-linear operation per backend.
//!
//! This is the one module that decides which burn backends exist in a build: the CPU backends
//! `flex` (default) and `ndarray`, and the GPU backends `wgpu` (Vulkan, Metal, DX12) and `cuda`,
//! are Cargo features. The API is the same in every build: asking for a backend that is not
//! compiled in gives [`BackendError::NotCompiled`]. Library code never picks a device: it takes
//! a [`Device`] from the caller; binaries, examples and tests pick one here.

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod device_blocks;
mod qlinear;

pub use burn::tensor::Device;
pub use qlinear::{QWeight, QuantLinearOps, quant_linear, quant_linear_t};

/// Asked for a backend that is not compiled into this build, or that does not exist.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend exists but this build was compiled without its Cargo feature.
    #[error("backend `{name}` is not compiled in: rebuild with `--features {feature}`")]
    NotCompiled {
        /// The backend asked for.
        name: String,
        /// The Cargo feature that enables it.
        feature: &'static str,
    },
    /// No backend of that name.
    #[error("unknown backend `{0}` (known: cpu, flex, ndarray, wgpu, cuda)")]
    Unknown(String),
}

/// The default CPU device: burn-flex when compiled in (the default feature), else burn-ndarray.
///
/// # Panics
/// When the build has no CPU backend at all (neither `flex` nor `ndarray`).
pub fn cpu() -> Device {
    #[cfg(feature = "flex")]
    {
        Device::flex()
    }
    #[cfg(all(not(feature = "flex"), feature = "ndarray"))]
    {
        #[allow(deprecated)]
        Device::ndarray()
    }
    #[cfg(not(any(feature = "flex", feature = "ndarray")))]
    {
        panic!("engram was built without a CPU backend: enable the `flex` or `ndarray` feature")
    }
}

/// Whether `device` (with or without autodiff) is one of the CPU backends, where the quantized
/// kernels read the mapped weights directly and the fused decode path may run.
pub fn is_cpu(device: &Device) -> bool {
    let device = device.clone().without_autodiff();
    #[cfg(feature = "flex")]
    if device == Device::flex() {
        return true;
    }
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    if device == Device::ndarray() {
        return true;
    }
    let _ = device;
    false
}

/// The device named `name`: `cpu` (the default CPU backend), `flex`, `ndarray`, `wgpu` (the
/// default wgpu adapter: a discrete GPU if any; `CUBECL_WGPU_DEFAULT_DEVICE` overrides) or
/// `cuda` (CUDA device 0).
///
/// Devices are lazy: a GPU device is opened at its first tensor, not here.
pub fn device_by_name(name: &str) -> Result<Device, BackendError> {
    match name {
        "cpu" => Ok(cpu()),
        "flex" => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
            #[cfg(not(feature = "flex"))]
            return Err(BackendError::NotCompiled {
                name: name.into(),
                feature: "flex",
            });
        }
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            return Ok(Device::ndarray());
            #[cfg(not(feature = "ndarray"))]
            return Err(BackendError::NotCompiled {
                name: name.into(),
                feature: "ndarray",
            });
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            return Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
            #[cfg(not(feature = "wgpu"))]
            return Err(BackendError::NotCompiled {
                name: name.into(),
                feature: "wgpu",
            });
        }
        "cuda" => {
            #[cfg(feature = "cuda")]
            return Ok(Device::cuda(0));
            #[cfg(not(feature = "cuda"))]
            return Err(BackendError::NotCompiled {
                name: name.into(),
                feature: "cuda",
            });
        }
        other => Err(BackendError::Unknown(other.into())),
    }
}
