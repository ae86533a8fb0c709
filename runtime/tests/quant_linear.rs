//! The frozen quantized linear layer under burn: forward against a dequantized reference, and
//! the autodiff input gradient (`dx = dy · W`, through the transposed quantized kernel), on every
//! compiled CPU backend. The weights come from a small GGUF file built in code.

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};
use engram_kernels::{GgmlType, dequantize_row, quantize_row};
use engram_runtime::backend::{QWeight, quant_linear, quant_linear_t};
use engram_runtime::cpu::CpuContext;
use engram_runtime::format::GgufBuilder;
use engram_runtime::model_file::ModelFile;

/// |engram − f32 reference| allowed on the forward, relative to the output's scale: activations
/// are quantized to 8 bits (q8_1/q8_0) before the product, as llama.cpp does.
const FORWARD_REL_TOL: f32 = 0.02;
/// The input gradient uses f32 activations against the dequantized blocks: only summation order
/// differs from the reference.
const GRAD_ABS_TOL: f32 = 1e-4;

const N_OUT: usize = 48;
const N_IN: usize = 96;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// A GGUF file with one `N_OUT × N_IN` weight of type `ty`, and that weight dequantized.
fn weight_file(ty: GgmlType, dir: &std::path::Path) -> (std::path::PathBuf, Vec<f32>) {
    let mut seed = 7;
    let w: Vec<f32> = (0..N_OUT * N_IN).map(|_| lcg(&mut seed) * 0.5).collect();
    let mut bytes = vec![0u8; ty.row_bytes(w.len()).expect("whole blocks")];
    quantize_row(ty, &w, &mut bytes).expect("a type engram can quantize");
    let mut deq = vec![0f32; N_OUT * N_IN];
    dequantize_row(ty, &bytes, &mut deq);
    let file = GgufBuilder::new()
        .tensor("w", &[N_IN, N_OUT], ty, &bytes)
        .build();
    let path = dir.join(format!("{}.gguf", ty.name()));
    std::fs::write(&path, file).unwrap();
    (path, deq)
}

fn devices() -> Vec<Device> {
    let devices = vec![engram_runtime::backend::cpu()];
    #[cfg(feature = "ndarray")]
    let devices = [
        devices,
        vec![engram_runtime::backend::device_by_name("ndarray").unwrap()],
    ]
    .concat();
    devices
}

fn check(ty: GgmlType, device: &Device) {
    let dir = tempfile::tempdir().unwrap();
    let (path, w) = weight_file(ty, dir.path());
    let file = ModelFile::open(&path).unwrap();
    let weight = QWeight::new(
        file.tensor("w").unwrap(),
        Arc::new(CpuContext::new(2).unwrap()),
    );
    assert_eq!((weight.n_out(), weight.n_in()), (N_OUT, N_IN));

    let m = 3;
    let mut seed = 11;
    let x: Vec<f32> = (0..m * N_IN).map(|_| lcg(&mut seed)).collect();
    let c: Vec<f32> = (0..m * N_OUT).map(|_| lcg(&mut seed)).collect();
    let device = device.clone().autodiff();
    let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, N_IN]), &device).require_grad();
    let ct = Tensor::<2>::from_data(TensorData::new(c.clone(), [m, N_OUT]), &device);
    let y = quant_linear(xt.clone(), &weight);
    let y_host = y.clone().into_data().try_to_vec::<f32>().unwrap();

    // Forward: x · Wᵀ with W dequantized, in f64.
    let scale = y_host.iter().fold(0f32, |a, v| a.max(v.abs()));
    for i in 0..m {
        for r in 0..N_OUT {
            let want: f64 = (0..N_IN)
                .map(|j| x[i * N_IN + j] as f64 * w[r * N_IN + j] as f64)
                .sum();
            let got = y_host[i * N_OUT + r];
            assert!(
                (got - want as f32).abs() <= FORWARD_REL_TOL * scale,
                "{ty:?} forward [{i},{r}]: {got} vs {want}"
            );
        }
    }

    // Backward of sum(y ∘ c): dx = c · W (W frozen, so it has no gradient of its own).
    let grads = (y * ct.clone()).sum().backward();
    let dx = xt
        .grad(&grads)
        .expect("x is tracked")
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    for i in 0..m {
        for j in 0..N_IN {
            let want: f64 = (0..N_OUT)
                .map(|r| c[i * N_OUT + r] as f64 * w[r * N_IN + j] as f64)
                .sum();
            let got = dx[i * N_IN + j];
            assert!(
                (got - want as f32).abs() <= GRAD_ABS_TOL,
                "{ty:?} dx [{i},{j}]: {got} vs {want}"
            );
        }
    }

    // The transposed product is itself differentiable (second-order terms go through quant_linear).
    let ct = ct.require_grad();
    let dxt = quant_linear_t(ct.clone(), &weight);
    let grads = dxt.sum().backward();
    let dc = ct
        .grad(&grads)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let row_sums: Vec<f32> = (0..N_OUT)
        .map(|r| w[r * N_IN..(r + 1) * N_IN].iter().sum())
        .collect();
    for i in 0..m {
        for r in 0..N_OUT {
            let got = dc[i * N_OUT + r];
            assert!(
                (got - row_sums[r]).abs()
                    <= FORWARD_REL_TOL * row_sums.iter().fold(0f32, |a, v| a.max(v.abs())) + 1e-3,
                "{ty:?} d(c) [{i},{r}]: {got} vs {}",
                row_sums[r]
            );
        }
    }
}

#[test]
fn q4_1_forward_and_input_gradient() {
    for device in devices() {
        check(GgmlType::Q4_1, &device);
    }
}

#[test]
fn q8_0_forward_and_input_gradient() {
    for device in devices() {
        check(GgmlType::Q8_0, &device);
    }
}

#[test]
fn q5_0_forward_and_input_gradient() {
    for device in devices() {
        check(GgmlType::Q5_0, &device);
    }
}

#[test]
fn q5_1_forward_and_input_gradient() {
    for device in devices() {
        check(GgmlType::Q5_1, &device);
    }
}
