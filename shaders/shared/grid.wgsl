// Linear workgroup index over a grid the host split into up to three dimensions
// (each at most max_compute_workgroups_per_dimension). Kernels skip the surplus.
fn linear_workgroup(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + nwg.x * (wg.y + nwg.y * wg.z);
}
