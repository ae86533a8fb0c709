//! Exporting a fully fine-tuned synthetic llama to GGUF: an untrained export reproduces the
//! file, a trained one reloads (with engram's own loader) to the trained model's logits within
//! the quantization error of the format, and generates what the trained model generates; bad
//! exports fail with typed errors and leave nothing behind.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{facts as data, max_diff, train_config};

use engram_adapters::full::export::quantize;
use engram_adapters::full::{ExportError, FullFinetune};
use engram_adapters::trainer::Trainer;
use engram_harness::synthetic::{TinyLlamaSpec, tiny_llama_gguf};
use engram_kernels::GgmlType;
use engram_runtime::backend;
use engram_runtime::cpu::CpuContext;
use engram_runtime::format::{Gguf, GgufBuilder};
use engram_runtime::generate::{Adaptation, GenerateOptions, generate, generate_with};
use engram_runtime::model::llama::{Llama, Logits};
use engram_runtime::model_file::ModelFile;

/// Logits of the same weights through the dense graph and the quantized kernels on f32
/// activations: only the summation order differs.
const SAME_WEIGHTS_TOL: f32 = 1e-4;

/// How much more a trained model's logits may move under its format's rounding than the
/// random base's do, relative to the largest logit: training makes the model sharper (measured
/// on this test's model: 0.8× for Q8_0, 1.4× for Q4_1).
const TRAINED_SENSITIVITY: f32 = 2.0;

const TOKENS: [u32; 12] = [3, 17, 42, 8, 8, 61, 0, 25, 33, 2, 50, 9];

fn write(dir: &Path, name: &str, bytes: &[u8]) -> ModelFile {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    ModelFile::open(&path).unwrap()
}

fn load(file: &ModelFile, autodiff: bool) -> Llama {
    let cpu = Arc::new(CpuContext::new(1).unwrap());
    let device = match autodiff {
        true => backend::cpu().autodiff(),
        false => backend::cpu(),
    };
    let mut model = Llama::load(file, &device, cpu).unwrap();
    model.set_f32_activations(true);
    model
}

fn logits(model: &Llama, a: Adaptation<'_>) -> Vec<f32> {
    a.forward(model, &TOKENS, 1, None, Logits::All)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

/// How far rounding to `ty` may move a weight of the block `block` (master values): half a
/// grid step, plus the f16 rounding of the block's scale (and minimum) times the largest code.
fn rounding_bound(ty: GgmlType, block: &[f32]) -> f32 {
    let (lo, hi) = block
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
    let amax = lo.abs().max(hi.abs());
    const F16_EPS: f32 = 1.0 / 1024.0;
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::Q8_0 => amax / 127.0 / 2.0 + amax * F16_EPS,
        GgmlType::Q4_1 => (hi - lo) / 15.0 / 2.0 + (lo.abs() + hi.abs()) * F16_EPS,
        other => panic!("no bound for {}", other.name()),
    }
}

fn train(model: &Llama, epochs: u32) -> FullFinetune {
    let config = train_config(epochs, 1e-2);
    let mut full = FullFinetune::new(model).unwrap();
    Trainer::for_tokens(model, 0, config)
        .fit_encoded(&mut full, &data(), &[], |_| {})
        .unwrap();
    full
}

#[test]
fn untrained_export_reproduces_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for ty in [
        GgmlType::F32,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
    ] {
        let original = tiny_llama_gguf(&TinyLlamaSpec::default(), ty, 7);
        let file = write(dir.path(), &format!("{}.gguf", ty.name()), &original);
        let model = load(&file, true);
        let full = FullFinetune::new(&model).unwrap();
        let out = dir.path().join(format!("{}-export.gguf", ty.name()));
        let report = full.save_gguf(&file, &out).unwrap();
        let exported = std::fs::read(&out).unwrap();
        let same = exported
            .iter()
            .zip(&original)
            .filter(|(a, b)| a == b)
            .count();
        eprintln!(
            "{}: {} of {} bytes equal, {} of {} tensors unchanged, max |written − master| {:.2e}",
            ty.name(),
            same,
            original.len(),
            report.unchanged,
            report.requantized,
            report.max_abs_error
        );
        // Re-quantizing dequantized blocks finds the same scales and codes: the same file.
        assert_eq!(exported, original, "{}", ty.name());
        assert_eq!(report.unchanged, report.requantized);
        assert_eq!(report.copied, 0);
        assert_eq!(report.max_abs_error, 0.0);
        let reloaded = load(&ModelFile::open(&out).unwrap(), true);
        assert_eq!(
            logits(&reloaded, Adaptation::default()),
            logits(&model, Adaptation::default())
        );
    }
}

#[test]
fn trained_export_reloads_to_the_trained_model() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinyLlamaSpec::default();
    // The same random weights stored as f32: how far a whole model moves when quantized.
    let f32_twin = load(
        &write(
            dir.path(),
            "f32.gguf",
            &tiny_llama_gguf(&spec, GgmlType::F32, 7),
        ),
        false,
    );
    let twin_logits = logits(&f32_twin, Adaptation::default());
    for ty in [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_1] {
        let file = write(
            dir.path(),
            &format!("{}.gguf", ty.name()),
            &tiny_llama_gguf(&spec, ty, 7),
        );
        let model = load(&file, true);
        let full = train(&model, 15);
        let out = dir.path().join(format!("{}-trained.gguf", ty.name()));
        let report = full.save_gguf(&file, &out).unwrap();
        let exported_file = ModelFile::open(&out).unwrap();
        let reloaded = load(&exported_file, true);
        // Weight level: every written weight is the master weight rounded to its block's grid.
        for id in full.params().ids() {
            let name = full.params().name(id);
            let view = exported_file.tensor(name).unwrap();
            let master = full
                .params()
                .value(id)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let mut written = vec![0f32; master.len()];
            let file_ty = view.ty();
            engram_kernels::dequantize_row(file_ty, view.bytes(), &mut written);
            let bs = file_ty.block_size();
            for (blk, (m, w)) in master.chunks(bs).zip(written.chunks(bs)).enumerate() {
                let bound = rounding_bound(file_ty, m);
                for (m, w) in m.iter().zip(w) {
                    assert!(
                        (m - w).abs() <= bound,
                        "{name} block {blk}: {m} -> {w} (bound {bound})"
                    );
                }
            }
        }
        let master = logits(&model, Adaptation::linear(&full));
        let base = logits(&model, Adaptation::default());
        let got = logits(&reloaded, Adaptation::default());
        // The file's weights through the dense graph: the same function, summed differently.
        let written = FullFinetune::new(&reloaded).unwrap();
        let dense = logits(&reloaded, Adaptation::linear(&written));
        assert!(max_diff(&got, &dense) <= SAME_WEIGHTS_TOL, "{}", ty.name());
        let err = max_diff(&got, &master);
        let moved = max_diff(&master, &base);
        // Logit level: the format's own relative precision, measured as the logit change from
        // storing the f32 model as `ty`, relative to the largest logit, applied to the trained
        // model's largest logit (zero for f32, where only summation order remains).
        let peak = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let relative_quant_error = max_diff(&base, &twin_logits) / peak(&twin_logits);
        let tol = TRAINED_SENSITIVITY * relative_quant_error * peak(&master) + SAME_WEIGHTS_TOL;
        eprintln!(
            "{}: training moved logits by {moved:.3}; export vs master {err:.2e} (tolerance \
             {tol:.2e}); weights max |written − master| {:.2e}, rms {:.2e}; {} of {} tensors \
             byte-identical to the base",
            ty.name(),
            report.max_abs_error,
            report.rms_error,
            report.unchanged,
            report.requantized
        );
        // Training survives the export: the file is much nearer the trained model than the base.
        assert!(
            err < 0.5 * max_diff(&got, &base),
            "{}: {err} vs {moved}",
            ty.name()
        );
        assert!(err <= tol, "{}: {err} > {tol}", ty.name());
        assert!(report.unchanged < report.requantized);
        // The exported model generates what the trained master weights generate.
        let opts = GenerateOptions {
            max_new_tokens: 3,
            ..Default::default()
        };
        for prompt in data().iter().map(|e| &e.tokens[..e.n_prompt]) {
            let trained = generate_with(&model, prompt, &opts, Adaptation::linear(&full), |_| {
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
            let exported = generate(&reloaded, prompt, &opts, |_| {
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
            assert_eq!(exported.tokens, trained.tokens, "{}", ty.name());
        }
    }
}

#[test]
fn bad_exports_fail_with_typed_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinyLlamaSpec::default();
    let bytes = tiny_llama_gguf(&spec, GgmlType::Q4_1, 7);
    let file = write(dir.path(), "base.gguf", &bytes);
    let model = load(&file, true);
    let out = dir.path().join("out.gguf");

    // Over another model: a tensor of another shape.
    let other_spec = TinyLlamaSpec { d_ff: 128, ..spec };
    let other = write(
        dir.path(),
        "other.gguf",
        &tiny_llama_gguf(&other_spec, GgmlType::Q4_1, 7),
    );
    let full = FullFinetune::new(&model).unwrap();
    let err = full.save_gguf(&other, &out).unwrap_err();
    assert!(matches!(err, ExportError::Mismatch { .. }), "{err}");

    // Over the base file itself.
    let err = full.save_gguf(&file, file.path()).unwrap_err();
    assert!(matches!(err, ExportError::OverwritesBase { .. }), "{err}");
    assert_eq!(std::fs::read(file.path()).unwrap(), bytes);

    // A NaN weight.
    let mut nan = full.clone();
    let mut host = nan.params().to_host();
    host.values[3][5] = f32::NAN;
    nan.params_mut().load_host(&host).unwrap();
    let err = nan.save_gguf(&file, &out).unwrap_err();
    assert!(matches!(err, ExportError::NonFinite { .. }), "{err}");

    // A tensor type engram reads but cannot write (Q8_1 here).
    let gguf = Gguf::parse(&bytes).unwrap();
    let mut b = GgufBuilder::new();
    for (k, v) in gguf.metadata() {
        b = b.metadata(k.clone(), v.clone());
    }
    for t in gguf.tensors() {
        b = if t.name == "output_norm.weight" {
            let mut q = vec![engram_kernels::quant::BlockQ8_1::zeroed(); t.n_elements() / 32];
            engram_kernels::quant::quantize_row_q8_1_ref(&vec![1.0; t.n_elements()], &mut q);
            b.tensor(&t.name, &t.dims, GgmlType::Q8_1, bytemuck::cast_slice(&q))
        } else {
            b.tensor(&t.name, &t.dims, t.ty, &bytes[t.byte_range()])
        };
    }
    let q81 = write(dir.path(), "q8_1.gguf", &b.build());
    let full = FullFinetune::new(&load(&q81, true)).unwrap();
    let err = full.save_gguf(&q81, &out).unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::NoQuantizer {
                ty: GgmlType::Q8_1,
                ..
            }
        ),
        "{err}"
    );
    assert!(quantize(GgmlType::Q6K, &[0.0; 256]).is_none());
    assert!(!out.exists());
}

use bytemuck::Zeroable;

/// Relative Frobenius error of a rank-r export when every changed projection has rank ≤ r.
const LOW_RANK_EXACT_TOL: f32 = 1e-5;

#[test]
fn lora_export_carries_the_projection_changes() {
    use engram_adapters::lora::LoraConfig;
    use engram_runtime::model::llama::Proj;
    use rand::{RngExt, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "q4_1.gguf",
        &tiny_llama_gguf(&TinyLlamaSpec::default(), GgmlType::Q4_1, 7),
    );
    let model = load(&file, true);
    // A known rank-2 change of every projection (norms and embedding untouched).
    let mut full = FullFinetune::new(&model).unwrap();
    let mut host = full.params().to_host();
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(3);
    for ((name, shape), v) in host.names.iter().zip(&host.shapes).zip(&mut host.values) {
        if !name.starts_with("blk.") || name.contains("norm") {
            continue;
        }
        let [rows, cols] = *shape;
        let mut g =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-0.1..0.1)).collect() };
        let (u, w) = (g(rows * 2), g(2 * cols));
        for i in 0..rows {
            for j in 0..cols {
                v[i * cols + j] += u[i * 2] * w[j] + u[i * 2 + 1] * w[cols + j];
            }
        }
    }
    full.params_mut().load_host(&host).unwrap();
    let config = LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: Proj::ALL.to_vec(),
        ..Default::default()
    };
    let (lora, report) = full.to_lora(&model, config.clone()).unwrap();
    eprintln!("rank-2 change, rank-4 LoRA: {report:?}");
    assert!(report.relative_error <= LOW_RANK_EXACT_TOL, "{report:?}");
    assert!(
        report.dropped_norm <= 1e-6 * report.total_norm,
        "{report:?}"
    );
    let master = logits(&model, Adaptation::linear(&full));
    let adapted = logits(&model, Adaptation::linear(&lora));
    assert!(
        max_diff(&master, &adapted) <= SAME_WEIGHTS_TOL,
        "{}",
        max_diff(&master, &adapted)
    );

    // A trained model: the norm and embedding changes are reported as dropped, and a full-rank
    // LoRA (64 = min(n_in, n_out) here) reproduces every projection change.
    let trained = train(&model, 5);
    let (_, report) = trained
        .to_lora(
            &model,
            LoraConfig {
                rank: 64,
                ..config.clone()
            },
        )
        .unwrap();
    eprintln!("trained, rank-64 LoRA: {report:?}");
    assert!(report.relative_error <= LOW_RANK_EXACT_TOL, "{report:?}");
    assert!(report.dropped_norm > 0.0 && report.dropped_norm < report.total_norm);
    let (_, r4) = trained.to_lora(&model, config).unwrap();
    eprintln!("trained, rank-4 LoRA: {r4:?}");
    assert!(r4.relative_error > report.relative_error && r4.relative_error < 1.0);
}
