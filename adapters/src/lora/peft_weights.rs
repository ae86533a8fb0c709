//! `adapter_model.safetensors` of a PEFT adapter: one tensor at a time, checked for its name,
//! shape, dtype and finite values before its values are used.
//!
//! Needs only `safetensors` and `half`: the fuzz crate compiles this file directly, so the
//! fuzzed code is the code `Lora::load_peft` runs.

use safetensors::{Dtype, SafeTensors};

/// The values of tensor `name`, which must have `shape` and an F32, F16 or BF16 dtype and hold
/// only finite values; the error says what is wrong (the caller adds the path).
pub fn peft_tensor(
    st: &SafeTensors<'_>,
    name: &str,
    shape: [usize; 2],
) -> Result<Vec<f32>, String> {
    let t = st
        .tensor(name)
        .map_err(|_| format!("missing tensor `{name}`"))?;
    if t.shape() != shape {
        return Err(format!(
            "`{name}`: shape {:?}, the model needs {shape:?}",
            t.shape()
        ));
    }
    let v = to_f32(t.dtype(), t.data())
        .ok_or_else(|| format!("`{name}`: dtype {:?} (F32, F16, BF16 read)", t.dtype()))?;
    if v.len() != shape[0] * shape[1] {
        return Err(format!("`{name}`: {} values for shape {shape:?}", v.len()));
    }
    match v.iter().all(|x| x.is_finite()) {
        true => Ok(v),
        false => Err(format!("`{name}` holds non-finite values")),
    }
}

fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}
