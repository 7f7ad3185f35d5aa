//! The cooperative-matrix fused kernel (`flash_attention_coop.wgsl`): which
//! listed shape it multiplies with, its tiles sized from the granted workgroup
//! memory and subgroup size, and when the plan picks it ([`Coop`]).

use crate::error::{Error, Result};
use crate::gpu::{Coop, CoopShape, DeviceCaps, Tuning};
use crate::kernels::flash_attention::{head_dim_bucket, FusedVariant, Kind};

use super::decode::FEW_QUERIES;

/// The square f16 × f16 → f32 tiles the kernel has (wgpu's WGSL has
/// `coop_mat8x8` and `coop_mat16x16`), largest first: a listed 16×16×16 takes a
/// quarter of the multiply-adds of 8×8×8.
pub(crate) const COOP_TILES: [u32; 2] = [16, 8];

/// Lanes (= query rows) per workgroup, at most.
const COOP_LANES: u32 = 64;

/// Keys per K/V tile, at most.
const COOP_KEYS: u32 = 64;

/// The tile the kernel multiplies with on a device listing `shapes`: the
/// largest of [`COOP_TILES`] listed exactly as M = N = K, A and B f16, C f32
/// (f32 accumulation); `None` when none is (an f16 → f16 entry alone does not
/// do: the scores would accumulate in f16).
pub(crate) fn coop_tile(shapes: &[CoopShape]) -> Option<u32> {
    use wgpu::CooperativeScalarType::{F16, F32};
    COOP_TILES.into_iter().find(|&t| {
        shapes
            .iter()
            .any(|s| (s.m, s.n, s.k, s.ab, s.cr) == (t, t, t, F16, F32))
    })
}

/// Workgroup memory of a coop variant: Q rows and the K tile in f16, the
/// scores tile in f32, the 16-byte key range, and the V tile in f32 (exact for
/// every dtype; P·V scalar) or with `pv` the V tile and weights in f16 and the
/// O tile in f32.
pub(crate) fn coop_workgroup_bytes(lanes: u32, keys: u32, bucket: u32, pv: bool) -> u32 {
    let common = 2 * lanes * bucket + 2 * keys * bucket + 4 * lanes * keys + 16;
    if pv {
        common + 2 * keys * bucket + 2 * lanes * keys + 4 * lanes * bucket
    } else {
        common + 4 * keys * bucket
    }
}

/// Why the device cannot run the coop kernel for head dim `d`, or its variant.
fn build(
    caps: &DeviceCaps,
    tuning: Tuning,
    d: usize,
    pv: bool,
) -> std::result::Result<FusedVariant, String> {
    use wgpu::Features as F;
    for (f, name) in [
        (
            F::EXPERIMENTAL_COOPERATIVE_MATRIX,
            "EXPERIMENTAL_COOPERATIVE_MATRIX",
        ),
        (F::SHADER_F16, "SHADER_F16"),
        (F::SUBGROUP, "SUBGROUP"),
    ] {
        if !caps.features.contains(f) {
            return Err(format!("{name} is not granted on {}", caps.name));
        }
    }
    let tile = coop_tile(&caps.coop_shapes).ok_or_else(|| {
        format!(
            "{} lists no f16×f16→f32 cooperative-matrix shape of 8x8x8 or 16x16x16 (it lists: {})",
            caps.name,
            if caps.coop_shapes.is_empty() {
                "none; a device given without its adapter, Gpu::from_device, lists none: use Gpu::from_wgpu".to_string()
            } else {
                caps.coop_shapes
                    .iter()
                    .map(CoopShape::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    })?;
    let bucket = head_dim_bucket(d);
    let l = &caps.limits;
    let want_lanes = match tuning.tile_lanes() {
        0 => COOP_LANES,
        n => n,
    }
    .min(l.max_compute_invocations_per_workgroup)
    .min(l.max_compute_workgroup_size_x);
    let want_keys = match tuning.tile_keys() {
        0 => COOP_KEYS,
        k => k,
    };
    // Whole subgroups only (a matrix operation spans its subgroup), and whole
    // tiles of rows and keys.
    let min_lanes = tile.max(caps.subgroup_max).max(1);
    // Tiles of at least 16 keys (or what was asked) before fewer lanes, then any.
    let floor = want_keys.min(16);
    for min_keys in [floor, tile] {
        let mut lanes = 1 << (31 - want_lanes.max(1).leading_zeros());
        while lanes >= min_lanes {
            if lanes.is_multiple_of(min_lanes) && lanes.is_multiple_of(tile) {
                let mut keys = (want_keys / tile * tile).max(tile);
                while keys >= min_keys.max(tile) {
                    if coop_workgroup_bytes(lanes, keys, bucket, pv)
                        <= l.max_compute_workgroup_storage_size
                    {
                        return Ok(FusedVariant {
                            kind: Kind::Coop {
                                tile,
                                lanes,
                                keys,
                                pv,
                            },
                            rows: 1,
                            bucket,
                            bias4: false,
                            pairs: false,
                        });
                    }
                    keys -= tile;
                }
            }
            lanes /= 2;
        }
    }
    Err(format!(
        "the cooperative-matrix kernel needs {} bytes of workgroup memory at D bucket {bucket} ({min_lanes} lanes, {tile} keys); {} grants {}",
        coop_workgroup_bytes(min_lanes, tile, bucket, pv),
        caps.name,
        l.max_compute_workgroup_storage_size
    ))
}

/// The coop variant for head dim `d` and `nq` queries under `tuning`, where the
/// tuning asks for it ([`Coop`]): `Auto` takes it on staged tunings for many
/// queries over f16 Q and K when the device can (P·V scalar); `On` (and
/// `Full`, P·V on the matrices too) takes it whenever it can and otherwise fails with [`Error::MissingFeature`] saying what is missing.
pub(crate) fn coop_variant(
    caps: &DeviceCaps,
    tuning: Tuning,
    d: usize,
    nq: usize,
    qk_f16: bool,
) -> Result<Option<FusedVariant>> {
    match tuning.coop() {
        Coop::Off => Ok(None),
        Coop::Auto => Ok((tuning.staged() && qk_f16 && nq > FEW_QUERIES)
            .then(|| build(caps, tuning, d, false).ok())
            .flatten()),
        c @ (Coop::On | Coop::Full) => build(caps, tuning, d, c == Coop::Full).map(Some).map_err(|why| {
            Error::MissingFeature(format!(
                "the cooperative-matrix fused kernel was asked for (Coop::{c:?}, attn's --coop or --path coop / coop-full), but {why}; use Coop::Auto or Coop::Off on this device"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::CooperativeScalarType::{F16, F32};

    fn shape(
        t: u32,
        ab: wgpu::CooperativeScalarType,
        cr: wgpu::CooperativeScalarType,
    ) -> CoopShape {
        CoopShape {
            m: t,
            n: t,
            k: t,
            ab,
            cr,
        }
    }

    /// A device of `kind` with cooperative matrices, subgroups of `sg`,
    /// `wg_kib` KiB of workgroup memory, listing `shapes`.
    fn caps(kind: wgpu::DeviceType, sg: u32, wg_kib: u32, shapes: Vec<CoopShape>) -> DeviceCaps {
        let info = wgpu::AdapterInfo {
            name: "test".into(),
            subgroup_min_size: sg,
            subgroup_max_size: sg,
            ..wgpu::AdapterInfo::new(kind, wgpu::Backend::Vulkan)
        };
        let limits = wgpu::Limits {
            max_compute_workgroup_storage_size: wg_kib << 10,
            ..wgpu::Limits::default()
        };
        let f = wgpu::Features::SUBGROUP
            | wgpu::Features::SHADER_F16
            | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        DeviceCaps::new(&info, limits, f).with_coop_shapes(shapes)
    }

    fn gpu_tuning() -> Tuning {
        Tuning::for_adapter(&wgpu::AdapterInfo::new(
            wgpu::DeviceType::DiscreteGpu,
            wgpu::Backend::Vulkan,
        ))
    }

    #[test]
    fn the_tile_is_a_listed_f16_to_f32_square_shape_largest_first() {
        assert_eq!(coop_tile(&[shape(8, F16, F32)]), Some(8));
        assert_eq!(coop_tile(&[shape(16, F16, F32)]), Some(16));
        assert_eq!(
            coop_tile(&[shape(8, F16, F32), shape(16, F16, F32)]),
            Some(16)
        );
        // f16 accumulation only, f32 inputs, an unlisted non-square shape: none.
        assert_eq!(coop_tile(&[shape(8, F16, F16), shape(16, F16, F16)]), None);
        assert_eq!(coop_tile(&[shape(8, F32, F32)]), None);
        let odd = CoopShape {
            m: 16,
            n: 8,
            k: 16,
            ab: F16,
            cr: F32,
        };
        assert_eq!(coop_tile(&[odd]), None);
        assert_eq!(coop_tile(&[]), None);
    }

    #[test]
    fn auto_takes_the_listed_shape_on_gpus_for_many_f16_queries_and_falls_back_otherwise() {
        let t = gpu_tuning();
        let gpu = |shapes| caps(wgpu::DeviceType::DiscreteGpu, 32, 48, shapes);
        let v = |c: &DeviceCaps, t: Tuning, nq, f16| coop_variant(c, t, 128, nq, f16).unwrap();
        for (shapes, tile) in [
            (vec![shape(8, F16, F32)], Some(8)),
            (vec![shape(16, F16, F32)], Some(16)),
            (vec![shape(16, F16, F16)], None),
        ] {
            let c = gpu(shapes);
            let got = v(&c, t, 1024, true).map(|v| match v.kind {
                Kind::Coop {
                    tile, lanes, keys, ..
                } => {
                    // Whole subgroups, whole tiles, within the memory granted.
                    assert!(lanes.is_multiple_of(32) && lanes.is_multiple_of(tile));
                    assert!(keys.is_multiple_of(tile));
                    assert!(coop_workgroup_bytes(lanes, keys, 128, false) <= 48 << 10);
                    tile
                }
                k => panic!("{k:?}"),
            });
            assert_eq!(got, tile);
            // Not for f32 data, few queries, CPU tunings, or when off.
            assert_eq!(v(&c, t, 1024, false), None);
            assert_eq!(v(&c, t, 1, true), None);
            assert_eq!(v(&c, t.with_staged(false), 1024, true), None);
            assert_eq!(v(&c, t.with_coop(Coop::Off), 1024, true), None);
        }
    }

    #[test]
    fn forced_coop_says_what_is_missing() {
        let t = gpu_tuning().with_coop(Coop::On);
        let err = |c: &DeviceCaps, d| match coop_variant(c, t, d, 1, false) {
            Err(Error::MissingFeature(m)) => m,
            other => panic!("{other:?}"),
        };
        let only_f16_acc = caps(
            wgpu::DeviceType::DiscreteGpu,
            32,
            48,
            vec![shape(8, F16, F16)],
        );
        assert!(
            err(&only_f16_acc, 64).contains("8x8x8 f16→f16"),
            "{}",
            err(&only_f16_acc, 64)
        );
        let mut no_feature = only_f16_acc.clone();
        no_feature.features = wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16;
        assert!(err(&no_feature, 64).contains("EXPERIMENTAL_COOPERATIVE_MATRIX"));
        // 8 KiB cannot hold 32 lanes of D 256 in f16 plus their scores.
        let tiny = caps(
            wgpu::DeviceType::DiscreteGpu,
            32,
            8,
            vec![shape(8, F16, F32)],
        );
        assert!(
            err(&tiny, 256).contains("workgroup memory"),
            "{}",
            err(&tiny, 256)
        );
        // Forced, it runs where it can: few queries, f32 data, subgroups of 8.
        let lp = caps(wgpu::DeviceType::Cpu, 8, 32, vec![shape(8, F16, F32)]);
        let v = coop_variant(&lp, t.with_staged(false), 7, 1, false)
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                v.kind,
                Kind::Coop {
                    tile: 8,
                    pv: false,
                    ..
                }
            ),
            "{v:?}"
        );
        let v = coop_variant(&lp, t.with_coop(Coop::Full), 64, 1, false)
            .unwrap()
            .unwrap();
        assert!(matches!(v.kind, Kind::Coop { pv: true, .. }), "{v:?}");
    }

    #[test]
    fn tiles_shrink_to_the_granted_workgroup_memory() {
        let t = gpu_tuning();
        for (kib, d) in [(16, 64), (16, 128), (16, 256), (32, 128), (48, 256)] {
            let c = caps(
                wgpu::DeviceType::DiscreteGpu,
                32,
                kib,
                vec![shape(16, F16, F32)],
            );
            for (mode, pv) in [(Coop::On, false), (Coop::Full, true)] {
                match coop_variant(&c, t.with_coop(mode), d, 1024, true) {
                    Ok(Some(v)) => {
                        let Kind::Coop {
                            lanes, keys, pv: p, ..
                        } = v.kind
                        else {
                            panic!("{v:?}")
                        };
                        assert_eq!(p, pv);
                        assert!(
                            coop_workgroup_bytes(lanes, keys, v.bucket, pv) <= kib << 10,
                            "{kib} KiB D{d}: {v:?}"
                        );
                    }
                    // Only when even 32 lanes × 16 keys do not fit.
                    Err(_) => assert!(
                        coop_workgroup_bytes(32, 16, d as u32, pv) > kib << 10,
                        "{kib} KiB D{d} pv={pv}"
                    ),
                    other => panic!("{other:?}"),
                }
            }
        }
    }
}
