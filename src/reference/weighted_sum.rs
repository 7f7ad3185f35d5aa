use crate::shape::AttnShape;

/// `O[b,h,i,:] = Σ_j P[b,h,i,j] · V[b,h/g,j,:]`.
pub fn weighted_sum<T: Copy + Into<f64>>(p: &[f64], v: &[T], shape: &AttnShape) -> Vec<f64> {
    let AttnShape {
        b,
        hq,
        hkv,
        nq,
        nk,
        d,
    } = *shape;
    let g = shape.group();
    let mut o = vec![0.0f64; shape.q_len()];
    for bi in 0..b {
        for h in 0..hq {
            for i in 0..nq {
                let prow = &p[((bi * hq + h) * nq + i) * nk..][..nk];
                let orow = &mut o[((bi * hq + h) * nq + i) * d..][..d];
                for (j, &pj) in prow.iter().enumerate() {
                    let vrow = &v[((bi * hkv + h / g) * nk + j) * d..][..d];
                    for (oc, &vc) in orow.iter_mut().zip(vrow) {
                        *oc += pj * vc.into();
                    }
                }
            }
        }
    }
    o
}
