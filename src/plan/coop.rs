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

/// Workgroup memory of a coop variant: Q rows and the K tile in f16, the V tile
/// in f32 (exact for every dtype; P·V is scalar), the scores tile in f32, the
/// 16-byte key range.
pub(crate) fn coop_workgroup_bytes(lanes: u32, keys: u32, bucket: u32) -> u32 {
    2 * lanes * bucket + 2 * keys * bucket + 4 * keys * bucket + 4 * lanes * keys + 16
}

/// Why the device cannot run the coop kernel for head dim `d`, or its variant.
fn build(caps: &DeviceCaps, tuning: Tuning, d: usize) -> std::result::Result<FusedVariant, String> {
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
                "none".to_string()
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
                    if coop_workgroup_bytes(lanes, keys, bucket)
                        <= l.max_compute_workgroup_storage_size
                    {
                        return Ok(FusedVariant {
                            kind: Kind::Coop { tile, lanes, keys },
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
        coop_workgroup_bytes(min_lanes, tile, bucket),
        caps.name,
        l.max_compute_workgroup_storage_size
    ))
}

/// The coop variant for head dim `d` and `nq` queries under `tuning`, where the
/// tuning asks for it ([`Coop`]): `Auto` takes it on staged tunings for many
/// queries over f16 Q and K when the device can; `On` takes it whenever it can
/// and otherwise fails with [`Error::MissingFeature`] saying what is missing.
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
            .then(|| build(caps, tuning, d).ok())
            .flatten()),
        Coop::On => build(caps, tuning, d).map(Some).map_err(|why| {
            Error::MissingFeature(format!(
                "the cooperative-matrix fused kernel was asked for (Coop::On / --path coop), but {why}; use Coop::Auto or Coop::Off on this device"
            ))
        }),
    }
}
