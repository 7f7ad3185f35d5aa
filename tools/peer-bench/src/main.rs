//! One-off peer benchmark: burn 0.22 (cubecl/cubek) attention on wgpu/Vulkan (lavapipe).
//! API: burn::tensor::module::attention (burn's fused-attention entry; on CubeCL backends
//! it dispatches to cubek flash attention kernels, autotuned against the multi-kernel fallback).
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, DeviceKind, Tensor, TensorData};
use std::time::Instant;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n).map(|_| lcg(&mut s)).collect()
}

fn cpu_attention(q: &[f32], k: &[f32], v: &[f32], bh: usize, n: usize, d: usize) -> Vec<f32> {
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0f32; bh * n * d];
    for h in 0..bh {
        let base = h * n * d;
        for i in 0..n {
            let mut s = vec![0f64; n];
            let mut m = f64::NEG_INFINITY;
            for j in 0..n {
                let mut acc = 0f64;
                for c in 0..d {
                    acc += q[base + i * d + c] as f64 * k[base + j * d + c] as f64;
                }
                s[j] = acc * scale;
                m = m.max(s[j]);
            }
            let mut sum = 0f64;
            for x in s.iter_mut() {
                *x = (*x - m).exp();
                sum += *x;
            }
            for c in 0..d {
                let mut acc = 0f64;
                for j in 0..n {
                    acc += s[j] * v[base + j * d + c] as f64;
                }
                out[base + i * d + c] = (acc / sum) as f32;
            }
        }
    }
    out
}

fn make(device: &Device, data: Vec<f32>, shape: [usize; 4]) -> Tensor<4> {
    Tensor::<4>::from_data(TensorData::new(data, shape), device)
}

fn run_attn(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>) -> Tensor<4> {
    attention(q.clone(), k.clone(), v.clone(), None, None, AttentionModuleOptions::default())
}

fn print_adapters() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = pollster_block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
    for a in adapters {
        let i = a.get_info();
        println!(
            "wgpu adapter: name={:?} backend={:?} type={:?} driver={:?} driver_info={:?}",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        );
    }
}

// Minimal block_on (wgpu's native futures resolve immediately).
fn pollster_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
    fn noop(_: *const ()) {}
    fn clone(p: *const ()) -> RawWaker {
        RawWaker::new(p, &VTABLE)
    }
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

fn main() {
    print_adapters();
    #[cfg(feature = "spirv")]
    let device = Device::vulkan(DeviceKind::Cpu);
    #[cfg(not(feature = "spirv"))]
    let device = Device::wgpu(DeviceKind::Cpu);
    println!("compiler path: {}", if cfg!(feature = "spirv") { "burn `vulkan` feature (cubecl SPIR-V)" } else { "burn `wgpu` feature (cubecl WGSL -> naga)" });

    let t0 = Instant::now();
    // Correctness check on a small shape.
    let (b, h, n, d) = (1usize, 2usize, 37usize, 64usize);
    let len = b * h * n * d;
    let (qd, kd, vd) = (rand_vec(len, 1), rand_vec(len, 2), rand_vec(len, 3));
    let q = make(&device, qd.clone(), [b, h, n, d]);
    let k = make(&device, kd.clone(), [b, h, n, d]);
    let v = make(&device, vd.clone(), [b, h, n, d]);
    let out = run_attn(&q, &k, &v).into_data().to_vec::<f32>().unwrap();
    let reference = cpu_attention(&qd, &kd, &vd, b * h, n, d);
    let max_err = out.iter().zip(&reference).map(|(a, r)| (a - r).abs()).fold(0f32, f32::max);
    println!("device identity: {:?}", device.identity());
    println!("correctness B{b} H{h} N{n} D{d}: max abs err = {max_err:.3e} (first call incl. init/tune {:.1} ms)", t0.elapsed().as_secs_f64() * 1e3);

    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if args.is_empty() { vec![1024, 2048] } else { args };
    for &n in &sizes {
        let (b, h, d) = (1usize, 8usize, 64usize);
        let len = b * h * n * d;
        let q = make(&device, rand_vec(len, 11), [b, h, n, d]);
        let k = make(&device, rand_vec(len, 12), [b, h, n, d]);
        let v = make(&device, rand_vec(len, 13), [b, h, n, d]);
        device.sync().unwrap();

        let t = Instant::now();
        let o = run_attn(&q, &k, &v);
        device.sync().unwrap();
        let first = t.elapsed().as_secs_f64() * 1e3;
        drop(o);

        let mut times = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let o = run_attn(&q, &k, &v);
            device.sync().unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
            drop(o);
        }
        // One extra call timed with a full read-back, as a check that sync really waited.
        let t = Instant::now();
        let o = run_attn(&q, &k, &v).into_data();
        let readback = t.elapsed().as_secs_f64() * 1e3;
        let checksum: f64 = o.to_vec::<f32>().unwrap().iter().map(|&x| x as f64).sum();

        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = (times[4] + times[5]) / 2.0;
        let flops = 4.0 * (b * h * n * n * d) as f64;
        println!(
            "B{b} H{h} N{n} D{d} f32 non-causal: first call {first:.1} ms | median of 10 {median:.2} ms ({:.2} GFLOP/s) | min {:.2} max {:.2} | 1 call with full readback {readback:.2} ms | checksum {checksum:.4}",
            flops / (median * 1e-3) / 1e9,
            times[0],
            times[9]
        );
    }
}
