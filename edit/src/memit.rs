//! MEMIT and AlphaEdit: many facts at once, spread over a range of layers.
//!
//! For each fact, `δ` is optimized at the last layer of the range (as ROME's `v*`). Walking the
//! range bottom-up, each layer takes an equal share of what is still missing and solves for the
//! least-squares update over the batch's keys `K`:
//!
//! - MEMIT: `ΔW = R (λC + K Kᵀ)⁻¹ K)ᵀ`, computed as `G (I + Kᵀ G)⁻¹` with `G = C⁻¹ K / λ`
//!   (Woodbury), so only an `n × n` system is solved per layer.
//! - AlphaEdit: `ΔWᵀ = (P' K Kᵀ + ρ I)⁻¹ P' K Rᵀ`, `P` the projector onto the null space of
//!   the preserved keys' statistics and `P' = P − Q Qᵀ` with `Q` an orthonormal basis of
//!   `P K_p`, `K_p` the keys of every earlier weight edit at the layer: the update lies in the
//!   null space of the corpus keys *and* of the earlier edits' keys, so it leaves the outputs
//!   at those keys exactly as they were (AlphaEdit's own sequential form only penalizes
//!   `‖ΔW K_p‖²`, which lets later edits move earlier ones). The solution lies in the range of
//!   `P'`, so with `B = P' K` it is `(B − B (ρI + BᵀB)⁻¹ Bᵀ B) / ρ`: again only a small
//!   system.
//!
//! Every update is kept as one rank-one term per fact and layer, so each fact can be undone.
//!
//! Unlike the reference implementation, the part of `δ` still missing after a layer is updated
//! is the target minus the *direct* change of the updated layers' outputs at the subject's key
//! (the engram graph exposes projection inputs, not the residual stream); later layers'
//! reaction to that change is not measured.

use super::linalg;
use engram_runtime::burn::tensor::Device;

use super::context::EditContext;
use super::probe;
use super::request::EditRequest;
use super::rome::subject_key;
use super::store::{EditDelta, EditSet, Method, RankOne};
use super::target;
use engram_adapters::compose::Stack;

/// How the per-layer update is solved.
pub enum Solver<'a> {
    /// MEMIT with `C⁻¹` per layer (row-major `(d_ff, d_ff)`) and the weight `λ`.
    Memit {
        /// `C⁻¹` of each layer of the range, in range order.
        inv_cov: Vec<&'a [f32]>,
        /// `λ` (MEMIT's `mom2_update_weight`).
        lambda: f32,
    },
    /// AlphaEdit with the null-space projector `P` per layer and the ridge `ρ`.
    AlphaEdit {
        /// `P` of each layer of the range, in range order.
        projector: Vec<&'a [f32]>,
        /// The keys written by earlier weight edits (any method) projected by `P`, per layer
        /// of the range, as an orthonormal basis ([`ProtectedBasis`]): the update is kept
        /// orthogonal to them.
        protected: Vec<&'a [Vec<f32>]>,
        /// `ρ` (AlphaEdit's `L2`).
        ridge: f32,
    },
}

/// The rank-one terms for each request (outer: requests, inner: layers).
pub fn batch_terms(
    cx: &EditContext,
    reqs: &[EditRequest],
    layers: &[usize],
    solver: &Solver,
) -> Result<Vec<Vec<RankOne>>, linalg::NotPositiveDefinite> {
    let z_layer = *layers.last().expect("a layer range");
    cx.progress.start("batch δ optimization", reqs.len() as u64);
    let deltas: Vec<Vec<f32>> = reqs
        .iter()
        .map(|r| {
            let p = target::rome_problem(cx.tok, r, cx.contexts);
            let delta = target::optimize(cx.model, z_layer, &p, cx.inner, cx.target).delta;
            cx.progress.advance(1);
            delta
        })
        .collect();
    cx.progress.finish();
    let n = reqs.len();
    let mut missing = deltas;
    let mut out: Vec<Vec<RankOne>> = vec![Vec::new(); n];
    let device: Device = cx.model.device().clone();
    for (i, &layer) in layers.iter().enumerate() {
        // Keys with this batch's updates of the lower layers applied.
        let mut tmp = EditSet::new(&device, Vec::new());
        for terms in &out {
            if !terms.is_empty() {
                tmp.push(
                    Method::Memit,
                    reqs[0].clone(),
                    EditDelta::Weights(terms.clone()),
                );
            }
        }
        let mut stack = Stack::default();
        if let Some(a) = cx.inner {
            stack.0.push(a);
        }
        stack.0.push(&tmp);
        let keys: Vec<Vec<f32>> = reqs
            .iter()
            .map(|r| {
                let cx = EditContext {
                    inner: Some(&stack),
                    ..*cx
                };
                subject_key(&cx, r, &[layer]).pop().expect("one layer")
            })
            .collect();
        let share = (layers.len() - i) as f32;
        let resid: Vec<Vec<f32>> = missing
            .iter()
            .map(|m| m.iter().map(|v| v / share).collect())
            .collect();
        let adj = match solver {
            Solver::Memit { inv_cov, lambda } => memit_adj(inv_cov[i], &keys, *lambda)?,
            Solver::AlphaEdit {
                projector,
                protected,
                ridge,
            } => alpha_adj(projector[i], protected[i], &keys, *ridge)?,
        };
        // Direct change of this layer's output at each fact's key: Σ_j (k_q · adj_j) resid_j.
        for (q, k) in keys.iter().enumerate() {
            for (j, a) in adj.iter().enumerate() {
                let c = probe::dot(k, a);
                for (m, r) in missing[q].iter_mut().zip(&resid[j]) {
                    *m -= c * r;
                }
            }
        }
        for (j, (a, k)) in adj.into_iter().zip(keys).enumerate() {
            out[j].push(RankOne {
                layer,
                r: resid[j].clone(),
                a,
                k,
                g: Vec::new(),
            });
        }
    }
    Ok(out)
}

/// `xᵢ · yⱼ` row-major `(|x|, |y|)`, plus `diag` on the diagonal.
fn gram(x: &[Vec<f32>], y: &[Vec<f32>], diag: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len() * y.len());
    for (i, xi) in x.iter().enumerate() {
        for (j, yj) in y.iter().enumerate() {
            out.push(probe::dot(xi, yj) + if i == j { diag } else { 0.0 });
        }
    }
    out
}

fn matvec(m: &[f32], x: &[f32]) -> Vec<f32> {
    m.chunks(x.len()).map(|row| probe::dot(row, x)).collect()
}

/// Columns of `(λC + K Kᵀ)⁻¹ K`, one per key.
fn memit_adj(
    inv_cov: &[f32],
    keys: &[Vec<f32>],
    lambda: f32,
) -> Result<Vec<Vec<f32>>, linalg::NotPositiveDefinite> {
    let n = keys.len();
    let g: Vec<Vec<f32>> = keys
        .iter()
        .map(|k| matvec(inv_cov, k).into_iter().map(|v| v / lambda).collect())
        .collect();
    let sys = gram(keys, &g, 1.0);
    // adj = G (I + M)⁻¹ = ((I + M)⁻¹ Gᵀ)ᵀ, M symmetric.
    let dff = keys[0].len();
    let gt: Vec<f32> = g.iter().flatten().copied().collect(); // (n, d_ff)
    let y = linalg::spd_solve(&sys, &gt, n, dff)?;
    Ok(y.chunks(dff).map(<[f32]>::to_vec).collect())
}

/// An orthonormal basis of the span of `vectors` (modified Gram–Schmidt, twice; a vector
/// whose remainder is below `1e-4` of its norm is dependent and dropped).
pub fn orthonormal_basis(vectors: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let mut basis: Vec<Vec<f32>> = Vec::new();
    for v in vectors {
        extend_basis(&mut basis, v);
    }
    basis
}

/// Adds `v`'s part outside the span of the orthonormal `basis` to it (one step of
/// [`orthonormal_basis`]).
fn extend_basis(basis: &mut Vec<Vec<f32>>, v: &[f32]) {
    let n0 = probe::norm(v);
    if n0 == 0.0 {
        return;
    }
    let mut r = v.to_vec();
    for _ in 0..2 {
        for q in basis.iter() {
            let c = probe::dot(&r, q);
            r.iter_mut().zip(q).for_each(|(x, y)| *x -= c * y);
        }
    }
    let n = probe::norm(&r);
    if n > 1e-4 * n0 {
        r.iter_mut().for_each(|x| *x /= n);
        basis.push(r);
    }
}

/// AlphaEdit's protected span at one layer: the orthonormal basis of `P K_p`, `K_p` the keys
/// of the earlier weight edits in order, kept from edit to edit. Rebuilding it for every edit
/// costs `O(n d² + n² d)` for `n` earlier keys of width `d` (≈ 30 GFLOP over three layers at
/// 1,000 edits); extending it costs one projection and one Gram–Schmidt step per new key, and
/// gives the same basis bit for bit (the same steps in the same order).
#[derive(Clone, Debug, Default)]
pub struct ProtectedBasis {
    /// The keys the basis was built from, in order.
    keys: Vec<Vec<f32>>,
    /// Orthonormal basis of their projections.
    basis: Vec<Vec<f32>>,
}

impl ProtectedBasis {
    /// Brings the basis up to `keys` projected by `projector`: extended when `keys` starts
    /// with the keys it was built from (edits were added), rebuilt otherwise (an edit was
    /// undone, a log restored).
    pub fn update(&mut self, projector: &[f32], keys: &[Vec<f32>]) {
        let held = self.keys.len();
        if keys.len() < held || keys[..held] != self.keys[..] {
            *self = Self::default();
        }
        for k in &keys[self.keys.len()..] {
            extend_basis(&mut self.basis, &matvec(projector, k));
            self.keys.push(k.clone());
        }
    }

    /// The orthonormal basis of the projected keys.
    pub fn basis(&self) -> &[Vec<f32>] {
        &self.basis
    }
}

/// Columns of AlphaEdit's `(B − B (ρI + BᵀB)⁻¹ Bᵀ B) / ρ`, one per key, for `B = P' K`
/// (`P'`: `P` without the span of the orthonormal `protected`, the projected earlier edits'
/// keys).
fn alpha_adj(
    projector: &[f32],
    protected: &[Vec<f32>],
    keys: &[Vec<f32>],
    ridge: f32,
) -> Result<Vec<Vec<f32>>, linalg::NotPositiveDefinite> {
    let b: Vec<Vec<f32>> = keys
        .iter()
        .map(|k| {
            let mut x = matvec(projector, k);
            for qi in protected {
                let c = probe::dot(&x, qi);
                x.iter_mut().zip(qi).for_each(|(o, v)| *o -= c * v);
            }
            x
        })
        .collect();
    let g = b.clone();
    let (m, n) = (g.len(), b.len());
    let s = gram(&g, &g, ridge);
    let t = gram(&g, &b, 0.0);
    let z = linalg::spd_solve(&s, &t, m, n)?; // (m, n)
    Ok((0..n)
        .map(|j| {
            let mut col = b[j].clone();
            for (x, gx) in g.iter().enumerate() {
                let c = z[x * n + j];
                for (o, v) in col.iter_mut().zip(gx) {
                    *o -= c * v;
                }
            }
            col.iter_mut().for_each(|o| *o /= ridge);
            col
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest `|a · k_p|` allowed for an update that must leave earlier keys alone.
    const PROTECT_TOLERANCE: f32 = 1e-4;

    #[test]
    fn alphaedit_updates_are_orthogonal_to_earlier_edits_keys() {
        // P: the projector onto the first 4 of 5 coordinates.
        let n = 5;
        let mut p = vec![0f32; n * n];
        for i in 0..4 {
            p[i * n + i] = 1.0;
        }
        let earlier = vec![vec![1.0, 1.0, 0.0, 0.0, 3.0], vec![0.0, 1.0, 1.0, 0.0, 0.0]];
        let keys = vec![vec![1.0, 2.0, 3.0, 4.0, 5.0]];
        let mut protected = ProtectedBasis::default();
        protected.update(&p, &earlier);
        let adj = alpha_adj(&p, protected.basis(), &keys, 1.0).unwrap();
        for k in &earlier {
            let leak = probe::dot(&adj[0], k);
            assert!(leak.abs() < PROTECT_TOLERANCE, "{leak}");
        }
        // Still an update: the key's part outside the protected span is written.
        assert!(probe::dot(&adj[0], &keys[0]) > 0.5);
        // Without earlier keys the first key is not protected.
        let free = alpha_adj(&p, &[], &keys, 1.0).unwrap();
        assert!(probe::dot(&free[0], &earlier[0]).abs() > 0.05);
        // A dependent vector adds nothing to the basis.
        let b = orthonormal_basis(&[vec![1.0, 0.0], vec![2.0, 0.0], vec![1.0, 1.0]]);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn the_protected_basis_grows_and_rebuilds_as_the_from_scratch_one() {
        let n = 7;
        let p: Vec<f32> = (0..n * n)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let keys: Vec<Vec<f32>> = (0..5)
            .map(|j| {
                (0..n)
                    .map(|i| ((i * 13 + j * 7) % 9) as f32 - 4.0)
                    .collect()
            })
            .collect();
        let scratch = |keys: &[Vec<f32>]| {
            orthonormal_basis(&keys.iter().map(|k| matvec(&p, k)).collect::<Vec<_>>())
        };
        let mut grown = ProtectedBasis::default();
        for m in 0..=keys.len() {
            grown.update(&p, &keys[..m]);
            assert_eq!(
                grown.basis(),
                &scratch(&keys[..m])[..],
                "{m} keys, bit for bit"
            );
        }
        // An earlier key removed (an undo): rebuilt, not extended.
        let undone = [keys[0].clone(), keys[2].clone(), keys[3].clone()];
        grown.update(&p, &undone);
        assert_eq!(grown.basis(), &scratch(&undone)[..]);
    }
}
