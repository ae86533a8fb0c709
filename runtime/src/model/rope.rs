//! Rotary position embeddings: the cos/sin tables of one setting and their application in
//! either pairing ([`RopeStyle`]), as ggml's `rope_ext` computes them (ggml-cpu `ops.cpp`:
//! `rope_yarn`, `ggml_rope_yarn_corr_dims`): a position scale, per-frequency factors
//! (Llama 3's `rope_freqs`, phi3's LongRoPE long or short factors), YaRN's blend of
//! interpolated and extrapolated angles, and a magnitude on cos and sin.

use burn::tensor::{Device, Tensor, TensorData};

use super::arch::{RopeStyle, Yarn};

/// The RoPE of one setting over every position of the trained context.
#[derive(Clone, Debug)]
pub(crate) struct RopeTable {
    cos: Tensor<2>, // (n_ctx, d_head / 2), times the magnitude
    sin: Tensor<2>, // (n_ctx, d_head / 2), times the magnitude
    style: RopeStyle,
}

/// What one table is made from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RopeSpec {
    /// Frequency base.
    pub base: f32,
    /// Position scale (`1 / factor` under linear and YaRN scaling).
    pub freq_scale: f32,
    /// Per-frequency divisors (`rope_freqs.weight`, or phi3's `rope_factors_long/short`),
    /// `d_head / 2` values.
    pub factors: Option<Vec<f32>>,
    /// YaRN, when the scaling type is yarn.
    pub yarn: Option<Yarn>,
    /// Factor on cos and sin before YaRN's own (`rope.scaling.attn_factor`, phi3's LongRoPE
    /// magnitude; 1 otherwise): ggml's `attn_factor`.
    pub attn_factor: f32,
    /// Rotated dimensions (= `d_head`).
    pub dim: usize,
    /// Positions.
    pub n_ctx: usize,
    /// Pairing.
    pub style: RopeStyle,
}

impl RopeSpec {
    /// ggml's YaRN correction dimensions `[start, end]` (`ggml_rope_yarn_corr_dims`): the
    /// frequency indices between which the ramp goes from extrapolation to interpolation.
    fn corr_dims(&self, yarn: &Yarn) -> [f32; 2] {
        // The dimension at which a frequency turns `rotations` times over the original context.
        let dim = |rotations: f32| {
            self.dim as f32
                * (yarn.n_ctx_orig as f32 / (rotations * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * self.base.ln())
        };
        let start = dim(yarn.beta_fast).floor();
        let end = dim(yarn.beta_slow).ceil();
        [start.max(0.0), end.min(self.dim as f32 - 1.0)]
    }

    /// The angle of frequency `i` per position: `base^(-2i/dim) / factor[i]`, times
    /// `freq_scale` (interpolated), or under YaRN a blend of that and the unscaled
    /// (extrapolated) angle by ggml's ramp over the correction dimensions.
    pub fn inv_freq(&self, i: usize) -> f64 {
        let f = (self.base as f64).powf(-2.0 * i as f64 / self.dim as f64);
        let factor = self.factors.as_ref().map_or(1.0, |v| v[i] as f64);
        let extrapolated = f / factor;
        let interpolated = self.freq_scale as f64 * extrapolated;
        match self.yarn {
            Some(yarn) if yarn.ext_factor != 0.0 => {
                let [low, high] = self.corr_dims(&yarn);
                let y = (i as f32 - low) / (high - low).max(0.001);
                let ramp = 1.0 - y.clamp(0.0, 1.0);
                let mix = (ramp * yarn.ext_factor) as f64;
                interpolated * (1.0 - mix) + extrapolated * mix
            }
            _ => interpolated,
        }
    }

    /// The factor on cos and sin: `attn_factor`, and under YaRN times `1 + 0.1 ln(1/scale)`
    /// (ggml's `mscale`).
    pub fn magnitude(&self) -> f32 {
        match self.yarn {
            Some(yarn) if yarn.ext_factor != 0.0 => {
                self.attn_factor * (1.0 + 0.1 * (1.0 / self.freq_scale).ln())
            }
            _ => self.attn_factor,
        }
    }
}

impl RopeTable {
    /// cos and sin of `p · inv_freq(i)`, times the magnitude, for every position `p`.
    pub fn new(spec: &RopeSpec, device: &Device) -> Self {
        let half = spec.dim / 2;
        let n = spec.n_ctx;
        let inv: Vec<f64> = (0..half).map(|i| spec.inv_freq(i)).collect();
        let m = spec.magnitude() as f64;
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in 0..n {
            for &f in &inv {
                let theta = p as f64 * f;
                cos.push((theta.cos() * m) as f32);
                sin.push((theta.sin() * m) as f32);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn yarn_spec(dim: usize, base: f32, n_ctx_orig: usize) -> RopeSpec {
        RopeSpec {
            base,
            freq_scale: 0.25,
            factors: None,
            yarn: Some(Yarn {
                ext_factor: 1.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
                n_ctx_orig,
            }),
            attn_factor: 1.0,
            dim,
            n_ctx: 8,
            style: RopeStyle::HalfSplit,
        }
    }

    #[test]
    fn yarn_correction_dims_and_ramp() {
        // Llama 2 7B's head at 4096 positions: d(32) = 20.9, d(1) = 45.03.
        let spec = yarn_spec(128, 10_000.0, 4096);
        assert_eq!(spec.corr_dims(&spec.yarn.unwrap()), [20.0, 46.0]);
        // The tiny parity case: frequencies 0..3 ramp from extrapolated to interpolated.
        let spec = yarn_spec(16, 500.0, 32);
        assert_eq!(spec.corr_dims(&spec.yarn.unwrap()), [0.0, 3.0]);
        let unscaled = |i: usize| 500f64.powf(-2.0 * i as f64 / 16.0);
        assert_eq!(spec.inv_freq(0), unscaled(0));
        let mix = |i: usize, ramp: f64| unscaled(i) * (0.25 * (1.0 - ramp) + ramp);
        assert!((spec.inv_freq(1) - mix(1, 2.0 / 3.0)).abs() < 1e-7);
        assert!((spec.inv_freq(2) - mix(2, 1.0 / 3.0)).abs() < 1e-7);
        assert!((spec.inv_freq(5) - 0.25 * unscaled(5)).abs() < 1e-12);
        assert!((spec.magnitude() - (1.0 + 0.1 * 4f32.ln())).abs() < 1e-6);
    }
}
