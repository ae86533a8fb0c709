//! CPU vs wgpu parity of the frozen quantized layer (feature `wgpu`): the same GGUF blocks run
//! through engram's CPU kernels and through the CubeCL kernels on the wgpu device, forward and
//! autodiff input gradient. In CI the wgpu device is Mesa's lavapipe (software Vulkan); every
//! new kernel shape costs a shader compile there (~16–19 s), so the shapes here are few and small.
//!
//! `real_model_top1_matches_cpu` runs the whole model on the GPU; it compiles every op of the
//! graph on first use, so it is `#[ignore]`d: `-- --ignored` runs it (CI leaves it off).
#![cfg(feature = "wgpu")]

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};
use engram_harness::synthetic::{TinyLlamaSpec, tiny_llama_gguf};
use engram_kernels::{GgmlType, dequantize_row, quantize_row};
use engram_runtime::backend::{QWeight, device_by_name, quant_linear, quant_linear_t};
use engram_runtime::cpu::CpuContext;
use engram_runtime::format::GgufBuilder;
use engram_runtime::model::attention::AttentionPrecision;
use engram_runtime::model::llama::{LinearAdapter, Llama, Logits, Proj};
use engram_runtime::model_file::ModelFile;

/// |wgpu − CPU| on the forward, relative to the output's largest magnitude: the CPU quantizes
/// activations to 8 bits (q8_1/q8_0) before the product, the GPU kernel keeps them f32.
const FORWARD_VS_CPU_REL_TOL: f32 = 0.02;
/// |wgpu − CPU| on the forward when the CPU also keeps f32 activations
/// (`QWeight::with_f32_activations`): the same function, only summation order differs.
const FORWARD_VS_CPU_F32_ABS_TOL: f32 = 1e-4;
/// |wgpu − f64 reference| on the forward with the dequantized weights: both sides use the exact
/// dequantized values and f32 activations, so only f32 summation order differs.
const FORWARD_VS_REF_ABS_TOL: f32 = 1e-4;
/// |wgpu − CPU| on the input gradient `dy · W`: both use f32 activations against the same
/// dequantized blocks, so only summation order differs.
const GRAD_VS_CPU_ABS_TOL: f32 = 1e-4;

const N_OUT: usize = 48;
const N_IN: usize = 96;
const M: usize = 3;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn wgpu() -> Device {
    device_by_name("wgpu").expect("built with --features wgpu")
}

/// A GGUF file with one `N_OUT × N_IN` weight of type `ty`, the weight opened from it, and the
/// weight dequantized (row-major `N_OUT × N_IN`).
fn weight(ty: GgmlType, dir: &std::path::Path) -> (QWeight, Vec<f32>, ModelFile) {
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
    let file = ModelFile::open(&path).unwrap();
    let weight = QWeight::new(
        file.tensor("w").unwrap(),
        Arc::new(CpuContext::new(2).unwrap()),
    );
    (weight, deq, file)
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// `y = x · Wᵀ` and `dx = c · W` (the input gradient of `sum(y ∘ c)`) on `device`.
fn forward_and_grad(
    weight: &QWeight,
    x: &[f32],
    c: &[f32],
    device: &Device,
) -> (Vec<f32>, Vec<f32>) {
    let device = device.clone().autodiff();
    let xt = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [M, N_IN]), &device).require_grad();
    let ct = Tensor::<2>::from_data(TensorData::new(c.to_vec(), [M, N_OUT]), &device);
    let y = quant_linear(xt.clone(), weight);
    let grads = (y.clone() * ct).sum().backward();
    let dx = xt.grad(&grads).expect("x is tracked");
    (host(y), host(dx))
}

/// The forward against the f64 product with the dequantized weights.
fn forward_reference(w: &[f32], x: &[f32]) -> Vec<f32> {
    (0..M * N_OUT)
        .map(|p| {
            let (i, r) = (p / N_OUT, p % N_OUT);
            (0..N_IN)
                .map(|j| x[i * N_IN + j] as f64 * w[r * N_IN + j] as f64)
                .sum::<f64>() as f32
        })
        .collect()
}

fn inputs() -> (Vec<f32>, Vec<f32>) {
    let mut seed = 11;
    let x = (0..M * N_IN).map(|_| lcg(&mut seed)).collect();
    let c = (0..M * N_OUT).map(|_| lcg(&mut seed)).collect();
    (x, c)
}

#[test]
fn q4_1_forward_and_input_gradient_match_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let (weight, w, _file) = weight(GgmlType::Q4_1, dir.path());
    let (x, c) = inputs();
    let (y_cpu, dx_cpu) = forward_and_grad(&weight, &x, &c, &engram_runtime::backend::cpu());
    let (y_gpu, dx_gpu) = forward_and_grad(&weight, &x, &c, &wgpu());

    let (y_cpu_f32, _) = forward_and_grad(
        &weight.with_f32_activations(true),
        &x,
        &c,
        &engram_runtime::backend::cpu(),
    );

    let scale = y_cpu.iter().fold(0f32, |a, v| a.max(v.abs()));
    let forward_vs_cpu = max_abs_diff(&y_gpu, &y_cpu);
    let forward_vs_cpu_f32 = max_abs_diff(&y_gpu, &y_cpu_f32);
    let forward_vs_ref = max_abs_diff(&y_gpu, &forward_reference(&w, &x));
    let grad_vs_cpu = max_abs_diff(&dx_gpu, &dx_cpu);
    eprintln!(
        "Q4_1 {N_OUT}x{N_IN}, m={M}: forward |gpu-cpu(q8 x)| {forward_vs_cpu:.3e} (scale \
         {scale:.3}), |gpu-cpu(f32 x)| {forward_vs_cpu_f32:.3e}, |gpu-ref| {forward_vs_ref:.3e}; \
         dx |gpu-cpu| {grad_vs_cpu:.3e}"
    );
    assert!(forward_vs_cpu <= FORWARD_VS_CPU_REL_TOL * scale);
    assert!(forward_vs_cpu_f32 <= FORWARD_VS_CPU_F32_ABS_TOL);
    assert!(forward_vs_ref <= FORWARD_VS_REF_ABS_TOL);
    assert!(grad_vs_cpu <= GRAD_VS_CPU_ABS_TOL);

    // The blocks went to the GPU once, and a second product reuses them.
    assert_eq!(weight.device_uploads(), 1);
    let again = quant_linear(
        Tensor::<2>::from_data(TensorData::new(x.clone(), [M, N_IN]), &wgpu()),
        &weight,
    );
    assert_eq!(weight.device_uploads(), 1);
    assert!(max_abs_diff(&host(again), &y_gpu) == 0.0);
}

/// Q4_0 and Q8_0 (the model's embedding/output type) forward, and the transposed product, each
/// against the f64 reference: the other block decoders of the kernels.
#[test]
fn q4_0_and_q8_0_products_match_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (x, c) = inputs();
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let (weight, w, _file) = weight(ty, dir.path());
        let y = host(quant_linear(
            Tensor::<2>::from_data(TensorData::new(x.clone(), [M, N_IN]), &wgpu()),
            &weight,
        ));
        let forward_vs_ref = max_abs_diff(&y, &forward_reference(&w, &x));
        let dx = host(quant_linear_t(
            Tensor::<2>::from_data(TensorData::new(c.clone(), [M, N_OUT]), &wgpu()),
            &weight,
        ));
        let dx_ref: Vec<f32> = (0..M * N_IN)
            .map(|p| {
                let (i, j) = (p / N_IN, p % N_IN);
                (0..N_OUT)
                    .map(|r| c[i * N_OUT + r] as f64 * w[r * N_IN + j] as f64)
                    .sum::<f64>() as f32
            })
            .collect();
        let grad_vs_ref = max_abs_diff(&dx, &dx_ref);
        eprintln!(
            "{ty:?}: forward |gpu-ref| {forward_vs_ref:.3e}, dy·W |gpu-ref| {grad_vs_ref:.3e}"
        );
        assert!(forward_vs_ref <= FORWARD_VS_REF_ABS_TOL, "{ty:?} forward");
        assert!(grad_vs_ref <= GRAD_VS_CPU_ABS_TOL, "{ty:?} transposed");
    }
}

/// The real model's next-token logits at the last position, CPU vs wgpu: same top-1 token.
/// Ignored by default (it compiles every op of the graph as a shader): run it with
/// `cargo test -p engram-runtime --features wgpu --test wgpu_parity -- --ignored`.
#[test]
#[ignore = "whole real model on the GPU; run with -- --ignored"]
fn real_model_top1_matches_cpu() {
    let path =
        engram_harness::fetch::resolve_model(None).unwrap_or_else(|e| panic!("no model: {e}"));
    let prompt = "The capital of France is";
    let top1 = |device: &Device| {
        let engine = engram_runtime::engine::Engine::load(&path, device, 0).unwrap();
        let t = std::time::Instant::now();
        let (_, logits) = engine.last_logits(prompt).unwrap();
        let best = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        eprintln!(
            "{device:?}: top-1 {best} ({:.3}) in {:.1?}",
            logits[best],
            t.elapsed()
        );
        (best, logits)
    };
    let (cpu_best, cpu_logits) = top1(&engram_runtime::backend::cpu());
    let (gpu_best, gpu_logits) = top1(&wgpu());
    eprintln!(
        "max |logit gpu-cpu| = {:.3e}",
        max_abs_diff(&gpu_logits, &cpu_logits)
    );
    assert_eq!(gpu_best, cpu_best);
}

/// |wgpu − CPU| on the tiny model's logits, relative to their largest magnitude. Both sides run
/// the same function (f32 activations into every quantized layer, f32 attention); the error is
/// summation order compounded through two blocks, norms and softmax.
const GRAPH_LOGITS_REL_TOL: f32 = 1e-4;
/// |wgpu − CPU| on the gradients through the tiny model (the trainable matrix in block 0 and the
/// input embeddings), relative to each gradient's largest magnitude.
const GRAPH_GRAD_REL_TOL: f32 = 1e-3;

/// A trainable `d_model × d_model` matrix added to block 0's value projection: `v += x · A`, the
/// shape of a LoRA update without its factorization. Its gradient flows back through every
/// quantized layer above it (their transposed kernels).
struct ValueDelta {
    a: Tensor<2>, // (d_model, d_kv)
}

impl LinearAdapter for ValueDelta {
    fn delta(&self, layer: usize, proj: Proj, x: &Tensor<3>) -> Option<Tensor<3>> {
        if layer != 0 || proj != Proj::V {
            return None;
        }
        let [b, t, d] = x.dims();
        let d_out = self.a.dims()[1];
        Some(
            x.clone()
                .reshape([b * t, d])
                .matmul(self.a.clone())
                .reshape([b, t, d_out]),
        )
    }
}

/// What [`tiny_model_logits_and_gradients`] measures on one device, as host values.
struct GraphRun {
    logits: Vec<f32>,
    grad_a: Vec<f32>,
    grad_x: Vec<f32>,
}

/// The tiny llama (Q4_1 projections) on `device`: logits of a fixed input, and the gradients
/// of `sum(logits ∘ c)` with respect to the adapter matrix and to the input embeddings.
fn tiny_model_logits_and_gradients(path: &std::path::Path, device: &Device) -> GraphRun {
    let device = device.clone().autodiff();
    let file = ModelFile::open(path).unwrap();
    let mut model = Llama::load(&file, &device, Arc::new(CpuContext::new(2).unwrap())).unwrap();
    // The GPU kernels keep activations f32; the CPU matches them on its f32 path.
    model.set_f32_activations(true);
    model.set_attention_precision(AttentionPrecision::F32);
    let (d, d_kv, n_vocab) = {
        let c = model.config();
        (c.d_model, c.d_kv(), c.n_vocab)
    };
    let mut seed = 23;
    let a: Vec<f32> = (0..d * d_kv).map(|_| lcg(&mut seed) * 0.05).collect();
    let a = Tensor::<2>::from_data(TensorData::new(a, [d, d_kv]), &device).require_grad();
    let adapter = ValueDelta { a: a.clone() };
    let x = model.embed(&GRAPH_TOKENS, 1).require_grad();
    let logits = model
        .forward_embeddings(x.clone(), None, Some(&adapter), Logits::All)
        .unwrap();
    let t = GRAPH_TOKENS.len();
    let c: Vec<f32> = (0..t * n_vocab).map(|_| lcg(&mut seed)).collect();
    let c = Tensor::<3>::from_data(TensorData::new(c, [1, t, n_vocab]), &device);
    let grads = (logits.clone() * c).sum().backward();
    let values = |t: TensorData| t.try_to_vec::<f32>().unwrap();
    GraphRun {
        grad_a: values(a.grad(&grads).expect("A is tracked").into_data()),
        grad_x: values(x.grad(&grads).expect("x is tracked").into_data()),
        logits: values(logits.into_data()),
    }
}

const GRAPH_TOKENS: [u32; 6] = [3, 17, 42, 8, 61, 25];

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// The whole llama graph (2 blocks, GQA, RoPE, SwiGLU, tied Q4_1 output) on wgpu vs CPU:
/// logits, and gradients through every quantized layer under autodiff.
#[test]
fn tiny_llama_logits_and_gradients_match_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(
        &path,
        tiny_llama_gguf(&TinyLlamaSpec::default(), GgmlType::Q4_1, 7),
    )
    .unwrap();
    let cpu = tiny_model_logits_and_gradients(&path, &engram_runtime::backend::cpu());
    let t = std::time::Instant::now();
    let gpu = tiny_model_logits_and_gradients(&path, &wgpu());
    let rel = |g: &[f32], c: &[f32]| max_abs_diff(g, c) / max_abs(c);
    let (logits, grad_a, grad_x) = (
        rel(&gpu.logits, &cpu.logits),
        rel(&gpu.grad_a, &cpu.grad_a),
        rel(&gpu.grad_x, &cpu.grad_x),
    );
    eprintln!(
        "tiny llama on wgpu in {:.1?}: logits rel err {logits:.3e} (scale {:.3}), dL/dA rel err \
         {grad_a:.3e}, dL/dx rel err {grad_x:.3e}",
        t.elapsed(),
        max_abs(&cpu.logits)
    );
    assert!(max_abs(&cpu.grad_a) > 0.0 && max_abs(&cpu.grad_x) > 0.0);
    assert!(logits <= GRAPH_LOGITS_REL_TOL, "logits");
    assert!(grad_a <= GRAPH_GRAD_REL_TOL, "dL/dA");
    assert!(grad_x <= GRAPH_GRAD_REL_TOL, "dL/dx");
}
