//! `C = A·B (+ bias)`, batched, any sizes, operands through strides
//! (`shaders/matmul.wgsl`, CPU twin [`crate::reference::matmul`]).

use super::{elem, same_device, TileConfig};
use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::shaders::{KernelSpec, Specialization};
use crate::tensor::Tensor;

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "matmul",
    storage_read_only: &[true, true, true, false],
};

crate::uniform! {
pub(super) struct Params {
    batch: u32,
    m: u32,
    n: u32,
    k: u32,
    tiles_m: u32,
    tiles_n: u32,
    has_bias: u32,
    bias_off: u32,
    a: [u32; 4],
    b: [u32; 4],
}}

/// (batch, rows, cols) and (offset, batch stride, row stride, col stride) of a 2-D
/// or 3-D operand; a 2-D operand has batch stride 0 (broadcast).
fn operand(t: &Tensor, what: &str) -> Result<([usize; 3], [u32; 4])> {
    let (s, st) = (t.shape(), t.strides());
    let off = t.offset() as u32;
    match s.len() {
        2 => Ok(([1, s[0], s[1]], [off, 0, st[0] as u32, st[1] as u32])),
        3 => Ok((
            [s[0], s[1], s[2]],
            [off, st[0] as u32, st[1] as u32, st[2] as u32],
        )),
        _ => Err(Error::Shape(format!(
            "{what} must be 2-D [rows, cols] or 3-D [batch, rows, cols], got {s:?}"
        ))),
    }
}

/// `a` `[M, K]` or `[batch, M, K]` times `b` `[K, N]` (shared by every batch) or
/// `[batch, K, N]`, plus `bias` `[N]`. Any strides: pass a transposed view for
/// `Aᵀ` or `Bᵀ`. The result is contiguous, `[M, N]` or `[batch, M, N]`, in A's
/// dtype; every operand may have any dtype (accumulation is f32).
///
/// ```
/// use wgpu_attention::{kernels::matmul::matmul, Gpu, Tensor};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let a = Tensor::from_slice(&gpu, &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
/// let b = Tensor::from_slice(&gpu, &[1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2])?;
/// let bias = Tensor::from_slice(&gpu, &[10.0f32, 20.0], &[2])?;
/// let c = matmul(&a, &b, Some(&bias))?;
/// assert_eq!(c.shape(), [2, 2]);
/// assert_eq!(c.to_vec_blocking()?, [14.0, 25.0, 20.0, 31.0]);
/// // Aᵀ·A with Aᵀ a view (swapped strides), not a copy.
/// let ata = matmul(&a.transpose(0, 1)?, &a, None)?;
/// assert_eq!(ata.to_vec_blocking()?, [17.0, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0]);
/// # Ok(()) }
/// ```
pub fn matmul(a: &Tensor, b: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let mut rec = a.gpu().recorder();
    let c = record_matmul(&mut rec, a, b, bias)?;
    rec.submit()?;
    Ok(c)
}

/// Records [`matmul`] without submitting.
pub fn record_matmul(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    record_matmul_to(rec, a, b, bias, None)
}

/// [`record_matmul`] into `out` when given (contiguous, of A's dtype and
/// C's shape), else into a new tensor.
pub(crate) fn record_matmul_to(
    rec: &mut Recorder<'_>,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    out: Option<&Tensor>,
) -> Result<Tensor> {
    same_device(a, b, "matmul operands")?;
    let ([ba, m, k], a_s) = operand(a, "A")?;
    let ([bb, kb, n], mut b_s) = operand(b, "B")?;
    if k != kb {
        return Err(Error::Shape(format!(
            "A is {:?} and B is {:?}: inner dimensions {k} and {kb} differ",
            a.shape(),
            b.shape()
        )));
    }
    if b.shape().len() == 3 && a.shape().len() == 2 {
        return Err(Error::Shape(
            "a 3-D B needs a 3-D A with the same batch".into(),
        ));
    }
    if b.shape().len() == 3 && bb != ba {
        return Err(Error::Shape(format!(
            "batch of A ({ba}) and B ({bb}) differ"
        )));
    }
    if b.shape().len() == 2 {
        b_s[1] = 0;
    }
    let bias_off = match bias {
        Some(t) => {
            same_device(a, t, "matmul bias")?;
            if t.shape() != [n] || t.strides() != [1] {
                return Err(Error::Shape(format!(
                    "bias must be contiguous [N = {n}], got shape {:?}",
                    t.shape()
                )));
            }
            t.offset() as u32
        }
        None => 0,
    };
    let gpu = a.gpu();
    let out_shape: Vec<usize> = if a.shape().len() == 3 {
        vec![ba, m, n]
    } else {
        vec![m, n]
    };
    let c = match out {
        Some(c) => {
            let contiguous = crate::tensor::contiguous_strides(&out_shape);
            if c.shape() != out_shape
                || c.strides() != contiguous
                || c.offset() != 0
                || c.dtype() != a.dtype()
            {
                return Err(Error::Shape(format!(
                    "matmul output must be contiguous {} {out_shape:?} from element 0, got {} {:?}",
                    a.dtype(),
                    c.dtype(),
                    c.shape()
                )));
            }
            c.clone()
        }
        None => Tensor::output_as(gpu, "matmul output", &out_shape, None, a.dtype())?,
    };
    let tile = TileConfig::new(rec.tuning());
    gpu.check_loop_budget("matmul", tile.loop_iterations(k))?;
    let (tiles_m, tiles_n) = tile.tiles(m, n);
    let params = Params {
        batch: ba as u32,
        m: m as u32,
        n: n as u32,
        k: k as u32,
        tiles_m,
        tiles_n,
        has_bias: bias.is_some() as u32,
        bias_off,
        a: a_s,
        b: b_s,
    };
    let mut elems = vec![("a", elem(a)), ("b", elem(b)), ("c", elem(&c))];
    if let Some(t) = bias {
        elems.push(("bias", elem(t)));
    }
    let kernel = gpu.kernel(
        &Specialization::new(&SPEC)
            .overrides(&tile.constants)
            .elems(&elems),
    )?;
    let total = ba as u64 * tiles_m as u64 * tiles_n as u64;
    rec.dispatch(
        &kernel,
        "matmul",
        &params,
        &[
            Some(a.buffer()),
            Some(b.buffer()),
            bias.map(Tensor::buffer),
            Some(c.buffer()),
        ],
        total,
    )?;
    Ok(c)
}
