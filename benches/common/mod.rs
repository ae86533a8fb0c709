//! What the benches share: the device the model benches run on, chosen at run time, and the
//! deterministic input vectors the kernel and projection benches multiply.
//!
//! `ENGRAM_BENCH_DEVICE` names it like the CLI's `--device`: `cpu` (the default), `flex`,
//! `ndarray`, or `wgpu` / `cuda` in a build with that feature
//! (`cargo bench --features wgpu --bench decode` with `ENGRAM_BENCH_DEVICE=wgpu`). Each bench
//! puts the name in its group names, so figures from two devices never share a criterion
//! baseline.

// Each bench compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

use engram::backend;
use engram::burn::tensor::Device;

/// The variable that picks the device.
pub const DEVICE_VAR: &str = "ENGRAM_BENCH_DEVICE";

/// The device the benches run on, and its name.
///
/// # Panics
/// When the name is unknown or names a backend this build does not have (the message is the
/// typed error's, which names the feature to enable).
pub fn device() -> (String, Device) {
    let name = std::env::var(DEVICE_VAR).unwrap_or_else(|_| "cpu".into());
    match backend::device_by_name(&name) {
        Ok(device) => (name, device),
        Err(e) => panic!("{DEVICE_VAR}={name}: {e}"),
    }
}

/// `len` deterministic values in [-1, 1): the activations the product benches feed.
pub fn x_vec(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// CPU thread counts to measure: `wanted` on a CPU device; one on a GPU device, where the
/// thread pool only runs the host side (tokenizing, sampling) and a sweep would repeat one figure.
pub fn threads(name: &str, wanted: &[usize]) -> Vec<usize> {
    if matches!(name, "cpu" | "flex" | "ndarray") {
        wanted.to_vec()
    } else {
        vec![1]
    }
}
