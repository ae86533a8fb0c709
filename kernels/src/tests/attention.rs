//! Attention of one query row: every table's kernels against the `_ref` twins, within
//! [`ATTENTION_TOLERANCE`] of the terms' magnitudes, on head sizes around the vector widths and
//! position counts around the four-position blocks.

use std::vec;

use super::{Rng, tables};
use crate::attention::*;

#[test]
fn attention_kernels_match_their_reference() {
    let mut rng = Rng::new(18);
    for d in [
        1, 3, 4, 7, 8, 9, 31, 32, 33, 63, 64, 65, 72, 80, 96, 128, 130,
    ] {
        for n in [0, 1, 2, 3, 4, 5, 7, 8, 9, 17, 40] {
            let stride = d + (n % 3) * 5; // rows packed, or with gaps (other heads)
            let q = rng.vec(d);
            // Keys and values of varied magnitude, so a relative bound means something.
            let m: vec::Vec<f32> = (0..n.max(1) * stride)
                .map(|i| rng.f32() * (1 + i % 7) as f32)
                .collect();
            let p: vec::Vec<f32> = (0..n).map(|_| rng.f32().abs()).collect();
            let start = rng.vec(d);
            let mut want_s = vec![f32::NAN; n];
            attention_scores_ref(&q, &m, stride, &mut want_s);
            let mut want_o = start.clone();
            attention_mix_ref(&p, &m, stride, &mut want_o);
            for (isa, kt) in tables() {
                let mut s = vec![f32::NAN; n];
                (kt.attn_scores)(&q, &m, stride, &mut s);
                for (j, (&got, &want)) in s.iter().zip(&want_s).enumerate() {
                    let mag: f32 = q
                        .iter()
                        .zip(&m[j * stride..])
                        .map(|(a, b)| (a * b).abs())
                        .sum();
                    assert!(
                        (got - want).abs() <= ATTENTION_TOLERANCE * mag
                            && got.to_bits() == want.to_bits(),
                        "{isa:?} scores d {d} n {n} j {j}: {got} vs {want}"
                    );
                }
                let mut o = start.clone();
                (kt.attn_mix)(&p, &m, stride, &mut o);
                for (i, (&got, &want)) in o.iter().zip(&want_o).enumerate() {
                    let mag: f32 = start[i].abs()
                        + (0..n)
                            .map(|j| (p[j] * m[j * stride + i]).abs())
                            .sum::<f32>();
                    assert!(
                        (got - want).abs() <= ATTENTION_TOLERANCE * mag
                            && got.to_bits() == want.to_bits(),
                        "{isa:?} mix d {d} n {n} i {i}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "need more than")]
fn attention_rows_must_fit() {
    let mut s = [0.0; 3];
    attention_scores(&[1.0; 8], &[0.0; 20], 8, &mut s);
}
