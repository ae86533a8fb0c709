//! The dense linear algebra the editors need, on the host in f64 (nalgebra): the inverse of
//! a key covariance (ROME, MEMIT), the projector onto its null space (AlphaEdit), and small
//! `m × m` solves (one row and column per edited fact).
//!
//! Matrices cross this module as row-major `f32` slices, the layout of burn's tensor data.

use nalgebra::{DMatrix, SymmetricEigen};

/// A matrix that should be symmetric positive definite is not (even after the ridge).
#[derive(Debug, thiserror::Error)]
#[error("{what}: matrix of order {n} is not positive definite")]
pub struct NotPositiveDefinite {
    /// Which matrix.
    pub what: &'static str,
    /// Its order.
    pub n: usize,
}

fn to_f64(a: &[f32], n: usize, m: usize) -> DMatrix<f64> {
    assert_eq!(a.len(), n * m, "matrix data does not match {n}x{m}");
    DMatrix::from_row_iterator(n, m, a.iter().map(|&v| v as f64))
}

fn to_f32_rows(a: &DMatrix<f64>) -> Vec<f32> {
    let (n, m) = a.shape();
    let mut out = Vec::with_capacity(n * m);
    for i in 0..n {
        for j in 0..m {
            out.push(a[(i, j)] as f32);
        }
    }
    out
}

/// `(c + ridge · mean(diag c) · I)⁻¹` of a symmetric `n × n` matrix, by Cholesky.
///
/// The ridge keeps the inverse bounded where the corpus left directions unexplored; with a
/// covariance from more tokens than dimensions it changes the result very little.
pub fn spd_inverse(c: &[f32], n: usize, ridge: f64) -> Result<Vec<f32>, NotPositiveDefinite> {
    let mut m = to_f64(c, n, n);
    let mean_diag = (0..n).map(|i| m[(i, i)]).sum::<f64>() / n as f64;
    for i in 0..n {
        m[(i, i)] += ridge * mean_diag;
    }
    let chol = m.cholesky().ok_or(NotPositiveDefinite {
        what: "covariance",
        n,
    })?;
    Ok(to_f32_rows(&chol.inverse()))
}

/// The orthogonal projector `U Uᵀ` onto the eigenvectors of the symmetric positive
/// semi-definite `c` with the smallest eigenvalues whose sum is at most `energy` times the
/// trace (AlphaEdit's null space of the preserved keys), and its rank.
pub fn null_space_projector(c: &[f32], n: usize, energy: f64) -> (Vec<f32>, usize) {
    let eig = SymmetricEigen::new(to_f64(c, n, n));
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[a].total_cmp(&eig.eigenvalues[b]));
    let budget = energy * eig.eigenvalues.iter().map(|v| v.max(0.0)).sum::<f64>();
    let mut used = 0.0;
    let keep: Vec<usize> = order
        .into_iter()
        .take_while(|&i| {
            used += eig.eigenvalues[i].max(0.0);
            used <= budget
        })
        .collect();
    let u = eig.eigenvectors.select_columns(&keep);
    let p = &u * u.transpose();
    (to_f32_rows(&p), keep.len())
}

/// Solves `a x = b` for a small symmetric positive definite `a` (`m × m`, row-major) and a
/// right-hand side `b` (`m × k`, row-major); returns `x` row-major.
pub fn spd_solve(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
) -> Result<Vec<f32>, NotPositiveDefinite> {
    let chol = to_f64(a, m, m).cholesky().ok_or(NotPositiveDefinite {
        what: "system",
        n: m,
    })?;
    Ok(to_f32_rows(&chol.solve(&to_f64(b, m, k))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_projector_and_solve_agree_with_hand_results() {
        // diag(4, 1, 0.0001): inverse diag(0.25, 1, 1e4); the null space holding at most
        // 1 % of the trace (5.0001) is e3 alone (e2 and e3 hold 20 %).
        let c = [4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1e-4];
        let inv = spd_inverse(&c, 3, 0.0).unwrap();
        assert!((inv[0] - 0.25).abs() < 1e-6 && (inv[4] - 1.0).abs() < 1e-6);
        assert!((inv[8] - 1e4).abs() < 1.0);
        let (p, rank) = null_space_projector(&c, 3, 0.01);
        assert_eq!(null_space_projector(&c, 3, 0.25).1, 2);
        assert_eq!(rank, 1);
        assert!((p[8] - 1.0).abs() < 1e-6 && p[0].abs() < 1e-6);
        // [[2,1],[1,3]] x = [3,5]  ->  x = [0.8, 1.4]
        let x = spd_solve(&[2.0, 1.0, 1.0, 3.0], &[3.0, 5.0], 2, 1).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-6 && (x[1] - 1.4).abs() < 1e-6);
        assert!(spd_solve(&[1.0, 2.0, 2.0, 1.0], &[1.0, 1.0], 2, 1).is_err());
    }
}
