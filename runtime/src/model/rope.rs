//! Rotary position embeddings: the cos/sin tables of one (base, scale, factors) setting and
//! their application in either pairing ([`RopeStyle`]), as ggml's `rope_ext` computes them
//! without YaRN (`ext_factor` 0, `attn_factor` 1).

use burn::tensor::{Device, Tensor, TensorData};

use super::arch::RopeStyle;

/// The RoPE of one setting over every position of the trained context.
#[derive(Clone, Debug)]
pub(crate) struct RopeTable {
    cos: Tensor<2>, // (n_ctx, d_head / 2)
    sin: Tensor<2>, // (n_ctx, d_head / 2)
    style: RopeStyle,
}

/// What one table is made from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RopeSpec {
    /// Frequency base.
    pub base: f32,
    /// Position scale (`1 / factor` under linear scaling).
    pub freq_scale: f32,
    /// Per-frequency divisors (`rope_freqs.weight`, Llama 3's scaling), `d_head / 2` values.
    pub factors: Option<Vec<f32>>,
    /// Rotated dimensions (= `d_head`).
    pub dim: usize,
    /// Positions.
    pub n_ctx: usize,
    /// Pairing.
    pub style: RopeStyle,
}

impl RopeSpec {
    /// The angle of frequency `i` per position: `scale · base^(-2i/dim) / factor[i]`.
    pub fn inv_freq(&self, i: usize) -> f64 {
        let f = (self.base as f64).powf(-2.0 * i as f64 / self.dim as f64);
        let factor = self.factors.as_ref().map_or(1.0, |v| v[i] as f64);
        self.freq_scale as f64 * f / factor
    }
}

impl RopeTable {
    /// cos and sin of `p · inv_freq(i)` for every position `p`.
    pub fn new(spec: &RopeSpec, device: &Device) -> Self {
        let half = spec.dim / 2;
        let n = spec.n_ctx;
        let inv: Vec<f64> = (0..half).map(|i| spec.inv_freq(i)).collect();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in 0..n {
            for &f in &inv {
                let theta = p as f64 * f;
                cos.push(theta.cos() as f32);
                sin.push(theta.sin() as f32);
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [n, half]), device),
            sin: Tensor::from_data(TensorData::new(sin, [n, half]), device),
            style: spec.style,
        }
    }

    /// Rotates `x` `(b, t, heads, d_head)` at positions `pos..pos + t`.
    pub fn apply(&self, x: Tensor<4>, pos: usize) -> Tensor<4> {
        let [b, t, nh, dh] = x.dims();
        let half = dh / 2;
        let table = |m: &Tensor<2>| m.clone().slice([pos..pos + t, 0..half]);
        match self.style {
            RopeStyle::Adjacent => {
                let cos = table(&self.cos).reshape([1, t, 1, half, 1]);
                let sin = table(&self.sin).reshape([1, t, 1, half, 1]);
                let pairs = x.reshape([b, t, nh, half, 2]);
                let x0 = pairs.clone().slice([0..b, 0..t, 0..nh, 0..half, 0..1]);
                let x1 = pairs.slice([0..b, 0..t, 0..nh, 0..half, 1..2]);
                let r0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
                let r1 = x0 * sin + x1 * cos;
                Tensor::cat(vec![r0, r1], 4).reshape([b, t, nh, dh])
            }
            RopeStyle::HalfSplit => {
                let cos = table(&self.cos).reshape([1, t, 1, half]);
                let sin = table(&self.sin).reshape([1, t, 1, half]);
                let x0 = x.clone().slice([0..b, 0..t, 0..nh, 0..half]);
                let x1 = x.slice([0..b, 0..t, 0..nh, half..dh]);
                let r0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
                let r1 = x0 * sin + x1 * cos;
                Tensor::cat(vec![r0, r1], 3)
            }
        }
    }
}
